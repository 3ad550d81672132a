package retention.flink;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.util.Collector;

/**
 * Keyed by figure: the sum of its deltas, emitted once when the end-of-input watermark (the
 * largest event time) fires the figure's timer, so the output is the final figures only.
 * Figures that summed to 0 (a cohort left behind) are not emitted.
 */
public class SumFigures extends KeyedProcessFunction<String, Delta, String> {
    private transient ValueState<Long> sum;

    @Override
    public void open(OpenContext context) {
        sum = getRuntimeContext().getState(new ValueStateDescriptor<>("sum", Types.LONG));
    }

    @Override
    public void processElement(Delta delta, Context context, Collector<String> out)
            throws Exception {
        Long current = sum.value();
        if (current == null) {
            context.timerService().registerEventTimeTimer(Long.MAX_VALUE);
            current = 0L;
        }
        sum.update(current + delta.change);
    }

    @Override
    public void onTimer(long timestamp, OnTimerContext context, Collector<String> out)
            throws Exception {
        Long total = sum.value();
        if (total != null && total != 0) {
            out.collect(context.getCurrentKey() + '\t' + total);
        }
    }
}
