package retention.flink;

import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.StateBackendOptions;
import org.apache.flink.connector.kafka.source.KafkaSource;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.util.CloseableIterator;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * The Apache Flink contender of {@code retention bench}: the bench's topic in, DAU per (app, day)
 * and classic day-N retention by cohort out, exact, in a local MiniCluster at parallelism 1.
 *
 * <p>The pipeline is the idiomatic DataStream one: Kafka source (bounded at the topic's end
 * offsets when the job starts) -> parse JSON ({@link ParseEvents}) -> keyBy user -> keyed state
 * of the user's active days and event ids ({@link UserDays}), emitting +/-1 deltas of the
 * figures -> keyBy figure -> keyed sums ({@link SumFigures}) released by the end-of-input
 * watermark -> collected into the output file. No window, so no event is ever late or dropped.
 *
 * <p>Arguments: {@code --bootstrap host:port --topic T --out FILE [--events N] [--timezone Z]
 * [--checkpoint-ms MS --checkpoint-dir DIR] [--activity-types a,b]}. It prints {@code progress
 * <events>} lines (the bench's window) and a {@code done ...} line.
 */
public final class RetentionJob {
    private RetentionJob() {}

    public static void main(String[] argv) throws Exception {
        Map<String, String> args = parse(argv);
        String bootstrap = required(args, "bootstrap");
        String topic = required(args, "topic");
        Path out = Path.of(required(args, "out"));
        long expected = Long.parseLong(args.getOrDefault("events", "0"));
        long checkpointMs = Long.parseLong(args.getOrDefault("checkpoint-ms", "0"));

        Configuration conf = new Configuration();
        conf.set(StateBackendOptions.STATE_BACKEND, "hashmap");
        if (checkpointMs > 0) {
            conf.set(CheckpointingOptions.CHECKPOINTS_DIRECTORY,
                    Path.of(required(args, "checkpoint-dir")).toUri().toString());
        }
        StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(1, conf);
        env.getConfig().enableObjectReuse(); // records are never held across calls
        if (checkpointMs > 0) {
            env.enableCheckpointing(checkpointMs);
        }

        KafkaSource<byte[]> source = KafkaSource.<byte[]>builder()
                .setBootstrapServers(bootstrap)
                .setTopics(topic)
                .setGroupId("retention-flink-" + topic)
                .setStartingOffsets(OffsetsInitializer.earliest())
                .setBounded(OffsetsInitializer.latest())
                .setDeserializer(KafkaRecordDeserializationSchema.valueOnly(ByteArrayDeserializer.class))
                .build();

        Set<String> activityTypes = new HashSet<>(Arrays.asList("install", "session", "purchase"));
        for (String custom : args.getOrDefault("activity-types", "").split(",")) {
            if (!custom.isBlank()) {
                activityTypes.add(custom.strip());
            }
        }
        String timezone = args.getOrDefault("timezone", "UTC");

        List<String> figures = new ArrayList<>();
        try (CloseableIterator<String> rows = env
                .fromSource(source, WatermarkStrategy.noWatermarks(), "kafka: " + topic)
                .flatMap(new ParseEvents(timezone, activityTypes)).name("parse JSON")
                .keyBy(Activity::userKey)
                .process(new UserDays(expected)).name("user's active days")
                .keyBy(Delta::figureKey)
                .process(new SumFigures()).name("sum per figure")
                .executeAndCollect("retention figures")) {
            rows.forEachRemaining(figures::add);
        }
        try (BufferedWriter writer = Files.newBufferedWriter(out, StandardCharsets.UTF_8)) {
            for (String row : figures) {
                writer.write(row);
                writer.write('\n');
            }
        }
        System.out.println("done " + figures.size() + " figures");
    }

    private static Map<String, String> parse(String[] argv) {
        Map<String, String> args = new HashMap<>();
        for (int i = 0; i + 1 < argv.length; i += 2) {
            if (!argv[i].startsWith("--")) {
                throw new IllegalArgumentException("expected --name value, got " + argv[i]);
            }
            args.put(argv[i].substring(2), argv[i + 1]);
        }
        return args;
    }

    private static String required(Map<String, String> args, String name) {
        String value = args.get(name);
        if (value == null) {
            System.err.println("retention flink job: --" + name + " is required");
            System.exit(2);
        }
        return value;
    }
}
