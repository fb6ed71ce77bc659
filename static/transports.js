// The three ways the player reads a job's event log (docs/stream-protocol.md, docs/player.md):
//   websocket  GET /ws, a JSON request out, msgpack events in (raw bytes; the default)
//   fetch-sse  POST /generate-stream read with fetch() as a stream, SSE framing, base64 bytes
//   events     GET /v1/jobs/{id}/events with EventSource (attach to a job, resume by seq)
// Each `open*` takes handlers and returns {close()}:
//   onEvent(event)  every job event in order: {type, seq, jobId, data}
//   onFailure(err)  the request was refused or the stream failed: err = {code, message, param}
//   onClosed(info)  the stream ended without a terminal event: {code, message, resumeFrom}
// After a terminal event (`complete`, `error`) a transport reports nothing more.

import { decode } from "./msgpack.js";
import { SSEParser, jobEventFromSSE } from "./sse.js";

let apiKey = "";

/** The API key requests send from now on (blank: none; a server needs one once any exists). */
export function setApiKey(key) {
  apiKey = String(key ?? "").trim();
}

/** Headers that name the API key (none when it is blank). */
export function keyHeaders() {
  return apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
}

/** `url` naming the API key in its query: for WebSocket and EventSource, which cannot set headers. */
function withKey(url) {
  if (apiKey) url.searchParams.set("api_key", apiKey);
  return url;
}

/** An absolute URL for an app path, relative to the page (works behind a path prefix). */
export function appUrl(path, protocol) {
  const url = new URL(path, document.baseURI);
  if (protocol === "ws") url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url;
}

/** The `{"error": {...}}` body of a failed HTTP response, or one made from its status. */
export async function errorFromResponse(response) {
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === "object") return body.error;
  } catch {
    // not JSON: fall through
  }
  return { code: `http_${response.status}`, message: text.slice(0, 300) || response.statusText, param: null };
}

function terminal(type) {
  return type === "complete" || type === "error";
}

/** Generate over the WebSocket: send `request`, read msgpack events until the server closes. */
export function openWebSocket(request, handlers) {
  const ws = new WebSocket(withKey(appUrl("ws", "ws")));
  ws.binaryType = "arraybuffer";
  let done = false;
  let lastSeq = -1;
  ws.onopen = () => ws.send(JSON.stringify(request));
  ws.onmessage = (message) => {
    if (done) return;
    if (typeof message.data === "string") {
      // The protocol sends events as binary; a text frame can only be an error body.
      const body = safeJson(message.data);
      done = true;
      handlers.onFailure(body?.error ?? { code: "protocol", message: `unexpected text frame: ${message.data.slice(0, 200)}`, param: null });
      ws.close();
      return;
    }
    let raw;
    try {
      raw = decode(message.data);
    } catch (err) {
      done = true;
      handlers.onFailure({ code: "protocol", message: `bad msgpack message: ${err.message}`, param: null });
      ws.close();
      return;
    }
    const event = { type: raw.type, seq: raw.seq, jobId: raw.job_id, data: raw.data ?? {} };
    lastSeq = event.seq;
    if (terminal(event.type)) done = true;
    handlers.onEvent(event);
  };
  ws.onclose = (close) => {
    if (done) return;
    done = true;
    // The close reason is a JSON error object {"code", "message", "param", ...}, cut short.
    const parsed = safeJson(close.reason);
    const reason = parsed?.error ?? (parsed?.code ? parsed : null);
    // 4408 slow consumer, 1001 going away, 1006 a dropped connection: once the job has
    // started, the player resumes it from what it has. Anything else is the answer.
    if (lastSeq >= 0 && [1001, 1006, 4408].includes(close.code)) {
      const resumeFrom = Number.isInteger(reason?.resume_from) ? reason.resume_from : lastSeq + 1;
      handlers.onClosed({ code: reason?.code ?? `ws_${close.code}`, message: reason?.message || close.reason || `WebSocket closed (${close.code})`, resumeFrom });
    } else {
      const message = close.code === 1006 && lastSeq < 0 ? "could not open the WebSocket /ws" : `the server closed the WebSocket (${close.code})`;
      handlers.onFailure(reason ?? { code: `ws_${close.code}`, message: close.reason || message, param: null });
    }
  };
  return {
    close() {
      done = true;
      ws.close(1000);
    },
    /** Ask the server to cancel the job this socket started (before its id is known). */
    cancel() {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ cancel: true }));
    },
  };
}

/** Generate with `POST /generate-stream`, reading the SSE body as it arrives. */
export function openFetchSSE(request, handlers) {
  const abort = new AbortController();
  let done = false;
  let lastSeq = -1;
  (async () => {
    const response = await fetch(appUrl("generate-stream"), {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...keyHeaders() },
      body: JSON.stringify(request),
      signal: abort.signal,
      cache: "no-store",
    });
    if (!response.ok) {
      done = true;
      handlers.onFailure(await errorFromResponse(response));
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SSEParser();
    for (;;) {
      const { value, done: ended } = await reader.read();
      if (ended) break;
      for (const sse of parser.feed(value)) {
        let event;
        try {
          event = jobEventFromSSE(sse);
        } catch (err) {
          done = true;
          abort.abort();
          handlers.onFailure({ code: "protocol", message: err.message, param: null });
          return;
        }
        lastSeq = event.seq;
        if (terminal(event.type)) done = true;
        handlers.onEvent(event);
        if (done) {
          abort.abort();
          return;
        }
      }
    }
    if (!done) {
      done = true;
      handlers.onClosed({ code: "eof", message: "the stream ended before the job did", resumeFrom: lastSeq + 1 });
    }
  })().catch((err) => {
    if (done) return;
    done = true;
    handlers.onClosed({ code: "network", message: String(err.message || err), resumeFrom: lastSeq + 1 });
  });
  return {
    close() {
      done = true;
      abort.abort();
    },
    cancel() {
      abort.abort(); // before `start` names the job, closing the stream is the only handle
    },
  };
}

const JOB_EVENT_TYPES = ["start", "progress", "segment", "complete", "error"];

/**
 * Attach to job `jobId` with EventSource from `fromSeq` on. EventSource reconnects by itself
 * after a dropped connection and sends `Last-Event-ID`, so the log resumes without gaps.
 */
export function openEventSource(jobId, fromSeq, handlers) {
  const url = appUrl(`v1/jobs/${encodeURIComponent(jobId)}/events`);
  if (fromSeq > 0) url.searchParams.set("from_seq", String(fromSeq));
  const source = new EventSource(withKey(url));
  let done = false;
  let lastSeq = fromSeq - 1;
  const onMessage = (message) => {
    if (done || !(message instanceof MessageEvent)) return; // see the "error" listener below
    let event;
    try {
      event = jobEventFromSSE({ type: message.type, data: message.data, id: message.lastEventId });
    } catch (err) {
      done = true;
      source.close();
      handlers.onFailure({ code: "protocol", message: err.message, param: null });
      return;
    }
    lastSeq = event.seq;
    if (terminal(event.type)) {
      done = true;
      source.close(); // or EventSource would reconnect after the server ends the stream
    }
    handlers.onEvent(event);
  };
  for (const type of JOB_EVENT_TYPES) source.addEventListener(type, onMessage);
  // "error" is both the job's `error` event (a MessageEvent with data, handled above) and
  // EventSource's own connection error (a plain Event): only the latter arrives here.
  source.addEventListener("error", async (event) => {
    if (done || event instanceof MessageEvent) return;
    if (source.readyState === EventSource.CLOSED) {
      // EventSource gives up on a non-200 answer without saying why: ask once more with fetch.
      done = true;
      handlers.onFailure(await whyUnreadable(url));
    } else if (handlers.onReconnecting) {
      handlers.onReconnecting(lastSeq + 1);
    }
  });
  source.addEventListener("open", () => handlers.onOpen?.());
  return {
    close() {
      done = true;
      source.close();
    },
    cancel() {},
  };
}

/** The error body of a URL EventSource could not read (404 unknown job, 410 trimmed, …). */
async function whyUnreadable(url) {
  const abort = new AbortController();
  try {
    const response = await fetch(url, { signal: abort.signal, cache: "no-store" });
    if (!response.ok) return await errorFromResponse(response);
    abort.abort();
    return { code: "connection", message: `${url.pathname} answered ${response.headers.get("Content-Type")}, not an event stream`, param: null };
  } catch (err) {
    return { code: "connection", message: `cannot reach the server: ${err.message}`, param: null };
  }
}

function safeJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
