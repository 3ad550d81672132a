package retention.flink;

import java.time.Instant;
import java.time.OffsetDateTime;
import java.time.ZoneId;
import java.time.ZoneOffset;
import java.time.format.DateTimeParseException;
import java.util.Set;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichFlatMapFunction;
import org.apache.flink.util.Collector;

/**
 * Kafka message bytes -> the activity events in it (METRICS.md section 1: one JSON object, or an
 * array of them). Only what the figures read is checked: event_id, user_id, app, type, ts. A
 * survey answer is not activity; a message or event that breaks those fields is counted as
 * rejected (the product dead-letters it) and skipped.
 */
public class ParseEvents extends RichFlatMapFunction<byte[], Activity> {
    private static final long DAY_MS = 86_400_000L;
    private final String timezone;
    private final Set<String> activityTypes;
    private transient ObjectMapper json;
    private transient ZoneId zone;
    private transient boolean utc;
    private long rejected;

    public ParseEvents(String timezone, Set<String> activityTypes) {
        this.timezone = timezone;
        this.activityTypes = activityTypes;
    }

    @Override
    public void open(OpenContext context) {
        json = new ObjectMapper();
        zone = ZoneId.of(timezone);
        utc = zone.normalized().equals(ZoneOffset.UTC); // the common case: no calendar lookups
    }

    @Override
    public void flatMap(byte[] message, Collector<Activity> out) {
        JsonNode root;
        try {
            root = json.readTree(message);
        } catch (Exception notJson) {
            rejected++;
            return;
        }
        if (root != null && root.isArray()) {
            for (JsonNode event : root) {
                emit(event, out);
            }
        } else {
            emit(root, out);
        }
    }

    private void emit(JsonNode event, Collector<Activity> out) {
        if (event == null || !event.isObject()) {
            rejected++;
            return;
        }
        String type = text(event.get("type"), 128);
        String eventId = text(event.get("event_id"), 128);
        String userId = text(event.get("user_id"), 128);
        JsonNode appNode = event.get("app");
        String app = appNode == null || appNode.isNull() ? "default" : text(appNode, 64);
        long ts = tsMs(event.get("ts"));
        if (type == null || eventId == null || userId == null || app == null || ts < 0) {
            rejected++;
            return;
        }
        if (type.equals("survey")) {
            return; // an answer, not activity (section 8)
        }
        if (!activityTypes.contains(type)) {
            rejected++;
            return;
        }
        out.collect(new Activity(app, userId, eventId, day(ts)));
    }

    private int day(long tsMs) {
        if (utc) {
            return (int) Math.floorDiv(tsMs, DAY_MS);
        }
        return (int) Instant.ofEpochMilli(tsMs).atZone(zone).toLocalDate().toEpochDay();
    }

    private static String text(JsonNode node, int maxLength) {
        if (node == null || !node.isTextual()) {
            return null;
        }
        String value = node.textValue();
        return value.isEmpty() || value.length() > maxLength ? null : value;
    }

    /** Epoch ms from an integer or an ISO-8601 string with an offset; -1 when neither. */
    private static long tsMs(JsonNode node) {
        if (node == null) {
            return -1;
        }
        if (node.isIntegralNumber() && node.canConvertToLong()) {
            return node.longValue();
        }
        if (node.isTextual()) {
            try {
                return OffsetDateTime.parse(node.textValue()).toInstant().toEpochMilli();
            } catch (DateTimeParseException notIso) {
                return -1;
            }
        }
        return -1;
    }

    @Override
    public void close() {
        System.out.println("rejected " + rejected);
    }
}
