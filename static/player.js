// The streamgen browser player: a request form, MSE playback of the job's continuous fMP4 as
// its segments arrive, progress and a segment timeline, cancel, and a download of the whole
// MP4 at the end. `/?job=<id>` attaches to an existing job. See docs/player.md.

import { MsePlayer } from "./mse.js";
import { appUrl, errorFromResponse, keyHeaders, openEventSource, openFetchSSE, openWebSocket, setApiKey } from "./transports.js";

const $ = (id) => document.getElementById(id);
const INT_FIELDS = ["width", "height", "seed", "num_inference_steps", "segment_frames", "overlap_frames"];
const FLOAT_FIELDS = ["seconds", "fps", "guidance_scale"];
const MAX_RESUMES = 5;
// Fragments are kept for the download; past this an unbounded job stops keeping them.
const MAX_KEPT_BYTES = 512 * 1024 * 1024;

const fmtSeconds = (s) => `${Number(s).toFixed(2)} s`;
const fmtBytes = (n) => (n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`);

/** The request body from the form: blank fields are left out (the backend's default). */
export function requestFromForm(form) {
  const f = new FormData(form);
  const request = { prompt: String(f.get("prompt") || "").trim() };
  const negative = String(f.get("negative_prompt") || "").trim();
  if (negative) request.negative_prompt = negative;
  for (const name of [...INT_FIELDS, ...FLOAT_FIELDS]) {
    const raw = String(f.get(name) ?? "").trim();
    if (raw === "" || (name === "seconds" && f.get("unbounded"))) continue;
    request[name] = Number(raw); // the server checks it and names the field if it is wrong
  }
  if (f.get("unbounded")) request.unbounded = true;
  return request;
}

/** A file's bytes as a `data:` URL (base64). */
function fileAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** One block per segment: pending, generating (filled by step), received (with its times). */
class Timeline {
  constructor(el) {
    this.el = el;
    this.blocks = [];
  }

  reset(total) {
    this.el.replaceChildren();
    this.blocks = [];
    if (total) this.block(total - 1);
  }

  block(index) {
    while (this.blocks.length <= index) {
      const i = this.blocks.length;
      const div = document.createElement("div");
      div.className = "seg pending";
      div.dataset.index = String(i);
      div.innerHTML = `<div class="fill"></div><span class="label">#${i + 1}</span>`;
      div.title = `segment ${i + 1}: waiting`;
      this.el.append(div);
      this.blocks.push(div);
    }
    return this.blocks[index];
  }

  generating(index, step, totalSteps) {
    const div = this.block(index);
    if (div.classList.contains("received")) return;
    div.className = "seg generating";
    div.firstElementChild.style.width = `${Math.round((100 * step) / Math.max(1, totalSteps))}%`;
    div.title = `segment ${index + 1}: step ${step}/${totalSteps}`;
  }

  received(index, d) {
    const div = this.block(index);
    div.className = "seg received";
    div.firstElementChild.style.width = "100%";
    div.dataset.start = String(d.start_time);
    div.dataset.end = String(d.end_time);
    div.querySelector(".label").textContent = `${Number(d.start_time).toFixed(1)}–${Number(d.end_time).toFixed(1)} s`;
    div.title =
      `segment ${index + 1}: ${fmtSeconds(d.start_time)} – ${fmtSeconds(d.end_time)}, ` +
      `${d.num_frames} frames from frame ${d.start_frame}` +
      (d.generate_seconds != null ? `, generated in ${fmtSeconds(d.generate_seconds)}` : "") +
      (d.encode_seconds != null ? `, encoded in ${fmtSeconds(d.encode_seconds)}` : "");
  }

  playhead(t) {
    for (const div of this.blocks) {
      const inside = div.dataset.start !== undefined && t >= Number(div.dataset.start) && t < Number(div.dataset.end);
      div.classList.toggle("playing", inside);
    }
  }
}

/** The page: one job at a time, started here or attached to. */
class PlayerPage {
  constructor() {
    this.root = $("player");
    this.form = $("generate-form");
    this.video = $("video");
    this.timeline = new Timeline($("timeline"));
    this.mse = null;
    this.stream = null;
    this.downloadUrl = null;
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.generate().catch((err) => this.showError({ code: "player", message: err.message, param: "audio" }));
    });
    this.form.elements.unbounded.addEventListener("change", (e) => (this.form.elements.seconds.disabled = e.target.checked));
    // The API key lives in this tab only (sessionStorage), never in the URL of the page.
    const keyField = this.form.elements.api_key;
    keyField.value = sessionStorage.getItem("streamgen-api-key") ?? "";
    setApiKey(keyField.value);
    keyField.addEventListener("input", () => {
      setApiKey(keyField.value);
      sessionStorage.setItem("streamgen-api-key", keyField.value.trim());
    });
    $("attach-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const id = String(new FormData(e.target).get("job") || "").trim();
      if (id) this.attach(id);
    });
    $("cancel").addEventListener("click", () => this.cancel());
    $("stop").addEventListener("click", () => this.stop());
    $("go-live").addEventListener("click", () => this.mse?.goLive());
    this.video.addEventListener("timeupdate", () => this.timeline.playhead(this.video.currentTime));
    setInterval(() => this.showPlayback(), 250);
    this.reset();
  }

  reset() {
    this.stream?.close();
    this.mse?.destroy();
    this.stream = null;
    this.mse = null;
    this.jobId = null;
    this.lastSeq = -1;
    this.resumes = 0;
    this.cancelling = false;
    this.init = null;
    this.fragments = new Map();
    this.keptBytes = 0;
    this.droppedForDownload = false;
    this.totalSegments = null;
    this.timeline.reset(null);
    this.showError(null);
    this.setProgress(0, "");
    if (this.downloadUrl) URL.revokeObjectURL(this.downloadUrl);
    this.downloadUrl = null;
    $("download").hidden = true;
    $("job-link").textContent = "";
    for (const el of this.form.querySelectorAll(".invalid")) el.classList.remove("invalid");
    this.root.dataset.jobId = "";
    this.root.dataset.segmentsReceived = "0";
    this.root.dataset.totalSegments = "";
  }

  setState(state, text) {
    this.root.dataset.state = state;
    $("state-text").textContent = text;
    const active = ["connecting", "waiting", "streaming"].includes(state);
    $("cancel").disabled = !active;
    $("stop").disabled = !active;
  }

  handlers() {
    return {
      onEvent: (event) => this.onEvent(event),
      onFailure: (error) => this.onFailure(error),
      onClosed: (info) => this.onClosed(info),
      onReconnecting: (fromSeq) => this.setState("connecting", `Reconnecting (from event ${fromSeq})…`),
      onOpen: () => this.root.dataset.state === "connecting" && this.setState("waiting", "Connected; waiting for events…"),
    };
  }

  async generate() {
    const request = requestFromForm(this.form);
    if (!request.prompt) {
      this.showError({ code: "invalid_request", message: "write a prompt first", param: "prompt" });
      return;
    }
    const audio = this.form.elements.audio?.files?.[0];
    if (audio) {
      request.audio = await fileAsDataURL(audio); // sent base64; the server reads its header
      this.video.muted = false; // the click on Generate lets the page play sound
    }
    this.reset();
    history.replaceState(null, "", location.pathname);
    const transport = this.form.elements.transport.value;
    this.root.dataset.transport = transport;
    this.setState("connecting", "Sending the request…");
    const open = transport === "fetch-sse" ? openFetchSSE : openWebSocket;
    this.stream = open(request, this.handlers());
  }

  attach(jobId) {
    this.reset();
    this.jobId = jobId;
    this.root.dataset.jobId = jobId;
    this.root.dataset.transport = "events";
    history.replaceState(null, "", `?job=${encodeURIComponent(jobId)}`);
    $("attach-form").elements.job.value = jobId;
    this.setState("connecting", `Attaching to job ${jobId}…`);
    this.showJobLink(jobId);
    this.stream = openEventSource(jobId, 0, this.handlers());
  }

  onEvent(event) {
    const d = event.data;
    if (event.type === "error" && d.code === "slow_consumer") {
      // Not an entry of the job's log (its seq repeats the last one sent): the server cut
      // this stream because we fell behind; the job goes on, so continue where we are.
      this.stream = null;
      this.resume(d.resume_from ?? this.lastSeq + 1, "fell behind the stream");
      return;
    }
    if (event.seq <= this.lastSeq) return; // a resumed stream may repeat what we have
    this.lastSeq = event.seq;
    this.resumes = 0; // MAX_RESUMES counts attempts in a row that brought nothing
    try {
      if (event.type === "start") this.onStart(event, d);
      else if (event.type === "queued") this.onQueued(d);
      else if (event.type === "progress") this.onProgress(d);
      else if (event.type === "segment") this.onSegment(d);
      else if (event.type === "complete") this.onComplete(d);
      else if (event.type === "error") this.onJobError(d.error ?? d);
    } catch (err) {
      this.onFailure({ code: "player", message: err.message, param: null });
    }
  }

  onStart(event, d) {
    this.jobId = event.jobId;
    this.root.dataset.jobId = event.jobId;
    history.replaceState(null, "", `?job=${encodeURIComponent(event.jobId)}`);
    this.showJobLink(event.jobId);
    if (!(d.init_segment instanceof Uint8Array)) throw new Error("the start event carries no init segment");
    this.mse = new MsePlayer(this.video, { onError: (err) => this.onFailure({ code: "media", message: err.message, param: null }) });
    this.mse.open(d.mime || `video/mp4; codecs="${d.codec}"`);
    this.init = d.init_segment;
    this.mse.append(d.init_segment);
    this.totalSegments = d.total_segments ?? null;
    this.root.dataset.totalSegments = this.totalSegments == null ? "" : String(this.totalSegments);
    this.timeline.reset(this.totalSegments);
    const length = d.total_frames != null ? `${d.total_frames} frames` : "unbounded";
    this.setState("streaming", `Generating ${d.width}×${d.height} at ${d.fps} fps, ${length}, seed ${d.seed}…`);
    this.setProgress(0, this.totalSegments ? `segment 0/${this.totalSegments}` : "");
  }

  onQueued(d) {
    // The job waits for a worker with room for it (a live stream is admitted only where it
    // keeps real time); say when it should start.
    const wait = d.estimated_wait_seconds;
    const when = wait == null ? "" : ` · starts in about ${Math.max(1, Math.round(wait))} s`;
    this.setProgress(null, `queued${when}`);
  }

  onProgress(d) {
    this.timeline.generating(d.segment_index, d.step, d.total_steps);
    const total = d.total_segments ?? this.totalSegments;
    const done = this.fragments.size + d.step / Math.max(1, d.total_steps);
    this.setProgress(total ? done / total : null, `segment ${d.segment_index + 1}${total ? `/${total}` : ""} · step ${d.step}/${d.total_steps}`);
  }

  onSegment(d) {
    if (!this.mse) throw new Error(`segment ${d.segment_index} arrived before the start event`);
    if (!(d.fragment instanceof Uint8Array)) throw new Error(`segment ${d.segment_index} carries no fragment`);
    this.mse.append(d.fragment);
    if (this.keptBytes + d.fragment.length <= MAX_KEPT_BYTES) {
      this.fragments.set(d.segment_index, d.fragment);
      this.keptBytes += d.fragment.length;
    } else {
      this.droppedForDownload = true;
    }
    this.timeline.received(d.segment_index, d);
    const received = Number(this.root.dataset.segmentsReceived) + 1;
    this.root.dataset.segmentsReceived = String(received);
    const total = d.total_segments ?? this.totalSegments;
    this.setProgress(total ? received / total : null, `segment ${received}${total ? `/${total}` : ""} received`);
  }

  onComplete(d) {
    this.mse?.end();
    this.stream = null;
    this.setState("complete", `Complete: ${d.total_segments} segments, ${d.total_frames} frames, ${fmtSeconds(d.duration)}.`);
    this.setProgress(1, `segment ${d.total_segments}/${d.total_segments}`);
    this.offerDownload(`${d.total_frames} frames, ${fmtSeconds(d.duration)}`);
  }

  onJobError(error) {
    this.mse?.end(); // let what arrived play to its end instead of waiting for more
    this.stream = null;
    if (error.code === "cancelled") {
      this.setState("cancelled", "Cancelled.");
    } else {
      this.setState("error", "The job failed.");
      this.showError(error);
    }
    this.offerDownload("partial");
  }

  onFailure(error) {
    this.stream?.close();
    this.stream = null;
    this.setState("error", "Failed.");
    this.showError(error);
    this.mse?.end();
  }

  onClosed(info) {
    this.stream = null;
    if (this.cancelling) {
      this.setState("cancelled", "Cancelled (stream closed).");
      this.mse?.end();
      return;
    }
    if (this.jobId && this.resumes < MAX_RESUMES) {
      this.resume(Math.max(info.resumeFrom, this.lastSeq + 1), info.message);
      return;
    }
    this.setState("error", "The stream closed.");
    this.showError({ code: info.code, message: info.message, param: null });
    this.mse?.end();
  }

  /** Continue the job's event log from `fromSeq` over GET /v1/jobs/{id}/events. */
  resume(fromSeq, why) {
    this.resumes++;
    this.setState("connecting", `Resuming from event ${fromSeq} (${why})…`);
    this.root.dataset.transport = "events";
    this.stream = openEventSource(this.jobId, fromSeq, this.handlers());
  }

  async cancel() {
    this.cancelling = true;
    if (!this.jobId) {
      this.stream?.cancel(); // no job id yet: ask over the open stream, or close it
      return;
    }
    this.setState(this.root.dataset.state, "Cancelling…");
    const response = await fetch(appUrl(`v1/jobs/${encodeURIComponent(this.jobId)}`), { method: "DELETE", headers: keyHeaders() });
    if (!response.ok) {
      this.showError(await errorFromResponse(response));
    }
    // The stream delivers the job's `error` event with code `cancelled`.
  }

  stop() {
    this.stream?.close();
    this.stream = null;
    this.mse?.end();
    this.setState("stopped", "Stopped watching.");
    this.offerDownload("partial");
  }

  offerDownload(note) {
    if (!this.init || this.fragments.size === 0) return;
    const indices = [...this.fragments.keys()].sort((a, b) => a - b);
    const gapless = indices.every((index, i) => index === i);
    const parts = [this.init, ...indices.map((i) => this.fragments.get(i))];
    const blob = new Blob(parts, { type: "video/mp4" });
    if (this.downloadUrl) URL.revokeObjectURL(this.downloadUrl);
    this.downloadUrl = URL.createObjectURL(blob);
    const link = $("download");
    const complete = note !== "partial" && gapless && !this.droppedForDownload;
    link.href = this.downloadUrl;
    link.download = `streamgen-${this.jobId}${complete ? "" : "-partial"}.mp4`;
    link.dataset.complete = String(complete);
    link.textContent = `Download ${complete ? "" : "partial "}MP4 (${indices.length} segments, ${complete ? `${note}, ` : ""}${fmtBytes(blob.size)})`;
    link.hidden = false;
  }

  showJobLink(jobId) {
    const a = document.createElement("a");
    a.href = `?job=${encodeURIComponent(jobId)}`;
    a.textContent = `job ${jobId}`;
    a.title = "Link to watch this job";
    $("job-link").replaceChildren(a);
  }

  setProgress(fraction, text) {
    const bar = $("progress");
    if (fraction == null) bar.removeAttribute("value");
    else bar.value = Math.min(1, fraction);
    $("progress-text").textContent = text;
  }

  showError(error) {
    const box = $("error");
    if (!error) {
      box.hidden = true;
      box.textContent = "";
      return;
    }
    box.replaceChildren();
    const code = document.createElement("strong");
    code.textContent = error.code || "error";
    box.append(code, ` ${error.message || ""}`);
    if (error.param) {
      const param = document.createElement("span");
      param.className = "param";
      param.textContent = ` (parameter: ${error.param})`;
      box.append(param);
      const input = this.form.elements[error.param];
      if (input && input.classList) {
        input.classList.add("invalid");
        input.focus();
      }
    }
    box.hidden = false;
  }

  showPlayback() {
    if (!this.mse) {
      $("playback-stats").textContent = "";
      $("go-live").hidden = true;
      return;
    }
    const v = this.video;
    const frames = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0;
    const behind = this.mse.behindLive;
    $("playback-stats").textContent =
      `at ${fmtSeconds(v.currentTime)} · buffered to ${fmtSeconds(this.mse.bufferedEnd)}` +
      ` (${fmtSeconds(behind)} ahead) · ${frames} frames decoded`;
    $("go-live").hidden = behind < 2 || this.root.dataset.state !== "streaming";
  }
}

const page = new PlayerPage();
window.streamgenPlayer = page; // for the console
const job = new URLSearchParams(location.search).get("job");
if (job) page.attach(job);
