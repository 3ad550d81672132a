package retention.flink;

import java.util.Arrays;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.util.Collector;

/**
 * Keyed by user: the user's event ids (a duplicate id changes nothing) and sorted active days.
 * The user's cohort is its earliest active day (METRICS.md section 3: first_seen is the earliest
 * event, whatever the arrival order). Each new active day d emits DAU(d) +1 and retained(c, d-c)
 * +1; a day before the cohort moves it: every retained cell of the old cohort -1, of the new +1.
 * So the sums downstream equal a batch count-distinct in any arrival order.
 *
 * <p>Every event read counts for progress, duplicates included (the bench's census counts them).
 */
public class UserDays extends KeyedProcessFunction<String, Activity, Delta> {
    private static final long PROGRESS_EVERY = 1024;
    private final long expectedEvents;
    private transient MapState<String, Boolean> seenIds;
    private transient ValueState<int[]> activeDays;
    private long events;
    private long duplicates;

    /** {@code expectedEvents}: a progress line is printed when that many were read (0: none). */
    public UserDays(long expectedEvents) {
        this.expectedEvents = expectedEvents;
    }

    @Override
    public void open(OpenContext context) {
        seenIds = getRuntimeContext().getMapState(
                new MapStateDescriptor<>("event ids", Types.STRING, Types.BOOLEAN));
        activeDays = getRuntimeContext().getState(new ValueStateDescriptor<>(
                "active days", PrimitiveArrayTypeInfo.INT_PRIMITIVE_ARRAY_TYPE_INFO));
    }

    @Override
    public void processElement(Activity event, Context context, Collector<Delta> out)
            throws Exception {
        events++;
        if (events % PROGRESS_EVERY == 0 || events == expectedEvents) {
            progress();
        }
        if (seenIds.contains(event.eventId)) {
            duplicates++;
            return;
        }
        seenIds.put(event.eventId, Boolean.TRUE);
        int day = event.day;
        int[] days = activeDays.value();
        if (days == null) {
            activeDays.update(new int[] {day});
            out.collect(Delta.dau(event.app, day));
            out.collect(Delta.retained(event.app, day, day, 1));
            return;
        }
        int found = Arrays.binarySearch(days, day);
        if (found >= 0) {
            return; // already active that day: no figure changes
        }
        int at = -found - 1;
        int[] grown = new int[days.length + 1];
        System.arraycopy(days, 0, grown, 0, at);
        grown[at] = day;
        System.arraycopy(days, at, grown, at + 1, days.length - at);
        activeDays.update(grown);
        out.collect(Delta.dau(event.app, day));
        int cohort = days[0];
        if (day > cohort) {
            out.collect(Delta.retained(event.app, cohort, day, 1));
            return;
        }
        for (int old : days) { // an earlier first day: the user moves to the earlier cohort
            out.collect(Delta.retained(event.app, cohort, old, -1));
        }
        for (int active : grown) {
            out.collect(Delta.retained(event.app, day, active, 1));
        }
    }

    /** "progress EVENTS EPOCH_MS": the bench's window is timed by this job's own clock. */
    private void progress() {
        System.out.println("progress " + events + " " + System.currentTimeMillis());
    }

    @Override
    public void close() {
        progress();
        System.out.println("duplicates " + duplicates);
    }
}
