package retention.flink;

/** One accepted activity event: whose, which (for dedup) and on which local day. */
public class Activity {
    /** app and user_id joined by U+001F: a user is (app, user_id). */
    public String userKey;
    public String app;
    public String eventId;
    /** The local calendar day of the event's ts, as days since 1970-01-01. */
    public int day;

    public Activity() {}

    public Activity(String app, String userId, String eventId, int day) {
        this.userKey = app + '\u001f' + userId;
        this.app = app;
        this.eventId = eventId;
        this.day = day;
    }

    public String userKey() {
        return userKey;
    }
}
