// Server-Sent Events framing (https://html.spec.whatwg.org/multipage/server-sent-events.html)
// as a pure parser: feed it decoded text in chunks of any size, get back whole events. Used to
// read `POST /generate-stream`, which EventSource cannot open (it only does GET).

/** Incremental SSE parser. `feed(text)` and `end()` return the events completed so far. */
export class SSEParser {
  constructor() {
    this.buffer = "";
    this.scanned = 0; // buffer[0:scanned] holds no line end: long data lines are scanned once
    this.pendingCR = false; // the previous chunk ended in "\r": a leading "\n" belongs to it
    this.lastEventId = "";
    this.retryMs = null;
    this.resetEvent();
  }

  resetEvent() {
    this.type = "";
    this.data = [];
  }

  /** Parse one more chunk of text; returns [{type, data, id}] for every completed event. */
  feed(text) {
    if (this.pendingCR && text.startsWith("\n")) text = text.slice(1);
    this.pendingCR = false;
    this.buffer += text;
    const events = [];
    let start = 0;
    let i = this.scanned;
    const buf = this.buffer;
    while (i < buf.length) {
      const c = buf.charCodeAt(i);
      if (c !== 10 && c !== 13) {
        i++;
        continue;
      }
      this.line(buf.slice(start, i), events);
      if (c === 13) {
        if (i + 1 === buf.length) this.pendingCR = true;
        else if (buf.charCodeAt(i + 1) === 10) i++;
      }
      start = ++i;
    }
    this.buffer = buf.slice(start);
    this.scanned = this.buffer.length;
    return events;
  }

  /** The stream ended: an event without its closing blank line is dropped (as the spec says). */
  end() {
    this.buffer = "";
    this.scanned = 0;
    this.resetEvent();
    return [];
  }

  line(line, events) {
    if (line === "") {
      if (this.data.length) {
        events.push({ type: this.type || "message", data: this.data.join("\n"), id: this.lastEventId });
      }
      this.resetEvent();
      return;
    }
    if (line.startsWith(":")) return; // comment (keep-alive)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.type = value;
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retryMs = Number(value);
  }
}

/** Decode base64 text to bytes. */
export function base64ToBytes(text) {
  if (typeof Uint8Array.fromBase64 === "function") return Uint8Array.fromBase64(text);
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

// The byte fields the player uses; others (the self-contained `segment_base64`) are dropped
// unread, which saves decoding a second copy of every segment.
const BYTE_FIELDS = ["init_segment", "fragment"];

/**
 * One SSE event of a streamgen job as the player's event: {type, seq, jobId, data}, with
 * `data.init_segment` / `data.fragment` as Uint8Array (see docs/stream-protocol.md).
 */
export function jobEventFromSSE(event) {
  let data;
  try {
    data = JSON.parse(event.data);
  } catch (err) {
    throw new Error(`the "${event.type}" event's data is not JSON: ${err.message}`);
  }
  for (const key of Object.keys(data)) {
    if (!key.endsWith("_base64")) continue;
    const name = key.slice(0, -"_base64".length);
    if (BYTE_FIELDS.includes(name)) data[name] = base64ToBytes(data[key]);
    delete data[key];
  }
  const seq = typeof data.seq === "number" ? data.seq : Number(event.id);
  return { type: event.type, seq, jobId: data.job_id, data };
}
