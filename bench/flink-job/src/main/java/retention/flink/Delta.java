package retention.flink;

/**
 * A change of one figure by one user: +1 when the user starts counting in it, -1 when it stops
 * (its cohort moved earlier). A figure is "dau\tAPP\tDAY" or "retained\tAPP\tCOHORT\tN", days
 * as days since 1970-01-01: the output line is the key, a tab and the sum.
 */
public class Delta {
    public String figureKey;
    public int change;

    public Delta() {}

    public Delta(String figureKey, int change) {
        this.figureKey = figureKey;
        this.change = change;
    }

    public static Delta dau(String app, int day) {
        return new Delta("dau\t" + app + '\t' + day, 1);
    }

    public static Delta retained(String app, int cohort, int activeDay, int change) {
        return new Delta("retained\t" + app + '\t' + cohort + '\t' + (activeDay - cohort), change);
    }

    public String figureKey() {
        return figureKey;
    }
}
