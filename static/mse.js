// Media Source Extensions playback of one continuous fragmented MP4 that grows while it plays.
// The init segment is appended once, then each fragment (moof+mdat, decode times continuous)
// in `segments` mode. SourceBuffer operations run one at a time: what arrives while the
// buffer is `updating` waits in a queue. Playback is never pulled to the live edge: if it falls
// behind it keeps playing what is buffered; if the buffer runs dry it waits for the next
// fragment (the element resumes by itself). Only a hole in the timeline (a resumed stream that
// missed fragments) is jumped over, since waiting would never fill it.

const GAP_TOLERANCE_SECONDS = 0.05;

export class MsePlayer {
  /**
   * `keepBehindSeconds`: buffered media further behind the playhead than this is removed, so
   * an unbounded stream does not fill the browser's SourceBuffer quota.
   */
  constructor(video, { onError = () => {}, keepBehindSeconds = 60 } = {}) {
    this.video = video;
    this.onError = onError;
    this.keepBehindSeconds = keepBehindSeconds;
    this.mediaSource = null;
    this.sourceBuffer = null;
    this.ops = [];
    this.wantPlay = true;
    this.appended = 0;
    this.quotaBlocked = false;
    this.listeners = [];
    this.listen(video, "waiting", () => this.skipGap());
    this.listen(video, "timeupdate", () => this.quotaBlocked && this.pump());
    // A pause that is not the end is the user's: do not start playing again behind their back.
    this.listen(video, "pause", () => (this.wantPlay = video.ended));
    this.listen(video, "play", () => (this.wantPlay = true));
  }

  /** Whether this browser can play `mime` (e.g. `video/mp4; codecs="avc1.64000a"`) in MSE. */
  static supports(mime) {
    return typeof MediaSource !== "undefined" && MediaSource.isTypeSupported(mime);
  }

  /** Attach a new MediaSource to the video; the SourceBuffer is made for `mime` once open. */
  open(mime) {
    if (typeof MediaSource === "undefined") throw new Error("this browser has no Media Source Extensions");
    if (!MediaSource.isTypeSupported(mime)) throw new Error(`this browser cannot play ${mime} with Media Source Extensions`);
    const ms = new MediaSource();
    this.mediaSource = ms;
    ms.addEventListener("sourceopen", () => {
      URL.revokeObjectURL(this.video.src);
      try {
        const sb = ms.addSourceBuffer(mime);
        sb.mode = "segments"; // decode times are continuous across fragments: keep them
        sb.addEventListener("updateend", () => this.afterUpdate());
        sb.addEventListener("error", () => this.onError(new Error("the browser could not decode a fragment")));
        this.sourceBuffer = sb;
      } catch (err) {
        this.onError(err);
        return;
      }
      this.pump();
    }, { once: true });
    this.video.src = URL.createObjectURL(ms);
  }

  /** Queue bytes (the init segment first, then fragments in order). */
  append(bytes) {
    this.ops.push({ append: bytes });
    this.pump();
  }

  /** Queue `endOfStream()`: after the last fragment the video ends instead of waiting. */
  end() {
    this.ops.push({ end: true });
    this.pump();
  }

  get bufferedEnd() {
    const b = this.video.buffered;
    return b.length ? b.end(b.length - 1) : 0;
  }

  /** Seconds of media buffered past the playhead (how far playback is behind the live edge). */
  get behindLive() {
    return Math.max(0, this.bufferedEnd - this.video.currentTime);
  }

  /** Jump to the newest media (a user choice; playback never does this by itself). */
  goLive() {
    const target = this.bufferedEnd - 0.25;
    if (target > this.video.currentTime) this.video.currentTime = target;
    this.video.play().catch(() => {});
  }

  /** Detach the MediaSource and drop queued work. */
  destroy() {
    this.ops = [];
    for (const [target, type, fn] of this.listeners) target.removeEventListener(type, fn);
    this.listeners = [];
    if (this.mediaSource) {
      this.video.removeAttribute("src");
      this.video.load();
    }
    this.mediaSource = this.sourceBuffer = null;
  }

  listen(target, type, fn) {
    target.addEventListener(type, fn);
    this.listeners.push([target, type, fn]);
  }

  pump() {
    const sb = this.sourceBuffer;
    const ms = this.mediaSource;
    if (!sb || sb.updating || !this.ops.length || ms.readyState !== "open") return;
    const op = this.ops[0];
    try {
      if (op.append) sb.appendBuffer(op.append);
      else if (op.remove) sb.remove(op.remove[0], op.remove[1]);
      else if (op.end) ms.endOfStream();
      this.ops.shift();
      this.quotaBlocked = false;
    } catch (err) {
      if (err.name === "QuotaExceededError") {
        // Full: drop what was played long ago; if nothing can go, wait for playback to move.
        this.quotaBlocked = !this.evict(2);
        if (!this.quotaBlocked) this.pump();
        return;
      }
      this.ops.shift();
      this.onError(err);
    }
  }

  afterUpdate() {
    this.appended++;
    this.skipGap();
    if (this.wantPlay && this.video.paused && !this.video.ended && this.video.buffered.length) {
      this.video.play().catch(() => {}); // muted autoplay is allowed; otherwise the user clicks play
    }
    this.evict(this.keepBehindSeconds);
    this.pump();
  }

  /** Queue removal of media older than `behindSeconds` before the playhead; true if any. */
  evict(behindSeconds) {
    const b = this.video.buffered;
    const cut = this.video.currentTime - behindSeconds;
    if (!b.length || b.start(0) >= cut - 1) return false;
    this.ops.unshift({ remove: [0, cut] });
    return true;
  }

  /** If the playhead sits in a hole before buffered media, move it to that media. */
  skipGap() {
    const v = this.video;
    const b = v.buffered;
    const t = v.currentTime;
    for (let i = 0; i < b.length; i++) {
      if (t + GAP_TOLERANCE_SECONDS >= b.start(i) && t < b.end(i)) return; // playable here
      if (b.start(i) > t) {
        v.currentTime = b.start(i);
        return;
      }
    }
  }
}
