// The browser player: frames and sound arrive from svs as stream-service sent them and are decoded
// here by WebCodecs (H.264 by VideoDecoder, JPEG bridge frames by createImageBitmap, Opus by
// AudioDecoder), then shown on a canvas on the sound's clock (the audio clock is the master, as
// in `svs play`; without sound, the wall clock). `window.svsPlayer.stats` is what the overlay
// shows, readable by tests.

const FRAME = 1;
const SOUND = 2;
const POSTER = 3;
// Frames decoded ahead of the clock at most; older ones are dropped first.
const MAX_QUEUED_FRAMES = 90;
// Sound is scheduled this far ahead of when its first packet arrives.
const SOUND_LEAD_SECONDS = 0.15;
const SEEK_STEP_SECONDS = 10;
const MAX_NOTES = 100;

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds || 0));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// Splits a binary message: kind, JSON header, payload.
export function unpack(buffer) {
  const view = new DataView(buffer);
  const kind = view.getUint8(0);
  const length = view.getUint32(1);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 5, length)));
  const payload = new Uint8Array(buffer, 5 + length);
  return { kind, header, payload };
}

// The codec string of an H.264 access unit's SPS (avc1.PPCCLL), or null without one.
function avcCodec(bytes) {
  for (let i = 0; i + 4 < bytes.length; i++) {
    if (bytes[i] === 0 && bytes[i + 1] === 0 && bytes[i + 2] === 1 && (bytes[i + 3] & 0x1f) === 7) {
      const hex = (b) => b.toString(16).padStart(2, "0");
      return `avc1.${hex(bytes[i + 4])}${hex(bytes[i + 5])}${hex(bytes[i + 6])}`;
    }
  }
  return null;
}

export class Player {
  constructor(elements, send) {
    this.el = elements;
    this.send = send;
    this.canvas = elements.screen;
    this.context = this.canvas.getContext("2d");
    this.queue = [];
    this.decoder = null;
    this.codec = null;
    this.needKeyframe = true;
    this.audio = null;
    this.audioDecoder = null;
    this.gain = null;
    this.sources = new Set();
    this.soundBase = null;
    this.wallBase = null;
    this.pausedAt = null;
    this.volume = 1;
    this.muted = false;
    this.playing = null;
    this.seeking = false;
    // The number of the playback this page wants: what an older one still sends is dropped.
    this.serial = 0;
    this.stats = this.freshStats();
    this.window = { at: performance.now(), frames: 0, bytes: 0 };
    setInterval(() => this.tick(), 8);
  }

  freshStats() {
    return {
      video: "", resolution: "", width: 0, height: 0, codec: "", fps: 0, kbitsPerSecond: 0,
      framesReceived: 0, framesDecoded: 0, framesDrawn: 0, jpegFrames: 0, h264Frames: 0,
      framesDropped: 0, skippedTotal: 0, lateMs: 0, position: 0, duration: 0, paused: false,
      lastIndex: -1, sound: null, soundPackets: 0, soundDecoded: 0, soundScheduled: 0,
      soundLate: 0, ended: null, notes: [],
      // Milliseconds from play() to the first frame drawn; the frame first drawn after a seek.
      firstFrameMs: null, seekLanded: null,
    };
  }

  // Starts `video` (stops the one playing).
  play(video, start = 0) {
    this.reset();
    this.stats = this.freshStats();
    this.stats.video = video;
    this.playAskedAt = performance.now();
    this.serial += 1;
    this.ensureAudio();
    this.send({
      type: "play", video, resolution: this.el.resolution.value, start_seconds: start, sound: true,
      serial: this.serial,
    });
  }

  stop() {
    this.serial += 1;
    this.send({ type: "stop" });
    this.reset();
    this.playing = null;
  }

  ensureAudio() {
    if (this.audio) return;
    try {
      this.audio = new AudioContext({ sampleRate: 48000 });
      this.gain = this.audio.createGain();
      this.gain.connect(this.audio.destination);
    } catch {
      this.audio = null;
    }
  }

  // Forgets everything decoded or scheduled (a new playback, a seek).
  reset() {
    this.generation = (this.generation || 0) + 1;
    for (const item of this.queue) item.image.close();
    this.queue = [];
    if (this.decoder && this.decoder.state !== "closed") this.decoder.reset();
    this.codec = null;
    this.needKeyframe = true;
    for (const source of this.sources) {
      try { source.stop(); } catch { /* already stopped */ }
    }
    this.sources.clear();
    if (this.audioDecoder && this.audioDecoder.state !== "closed") this.audioDecoder.reset();
    this.audioConfigured = false;
    this.soundBase = null;
    this.wallBase = null;
    this.pausedAt = null;
    this.frozen = null;
  }

  // Whether a message belongs to the playback this page wants now.
  current(message) {
    return message.serial === this.serial;
  }

  started(header) {
    if (!this.current(header)) return;
    this.playing = header;
    Object.assign(this.stats, {
      resolution: header.resolution, width: header.width, height: header.height,
      codec: header.codec, duration: header.duration_seconds, sound: header.sound,
      paused: false, ended: null,
    });
    this.el.seek.max = String(header.duration_seconds);
    this.el.note.textContent = "";
    if (header.sound && this.audio && this.audio.state === "suspended") this.audio.resume();
  }

  notice(message) {
    if (!this.current(message)) return;
    this.note(message.text);
    this.el.note.textContent = message.text;
    if (message.switched_to) this.stats.resolution = message.switched_to;
    if (message.text.startsWith("not done")) this.seeking = false;
    const state = message.state || "";
    if (state === "paused") this.paused(true);
    else if (state === "resumed") this.paused(false);
    else if (state.startsWith("seeked")) {
      this.reset();
      this.seeking = false;
      this.landing = true;
    }
  }

  // Keeps the newest notes only (a hostile service may send many).
  note(text) {
    this.stats.notes.push(text);
    if (this.stats.notes.length > MAX_NOTES) this.stats.notes.shift();
  }

  paused(paused) {
    this.stats.paused = paused;
    this.el.playPause.textContent = paused ? "Play" : "Pause";
    if (paused) {
      // The picture holds from now, even before the sound device has stopped.
      this.frozen = this.position();
      this.pausedAt = performance.now();
      if (this.audio) this.audio.suspend();
    } else {
      this.frozen = null;
      if (this.pausedAt !== null && this.wallBase !== null) this.wallBase += (performance.now() - this.pausedAt) / 1000;
      this.pausedAt = null;
      if (this.audio) this.audio.resume();
    }
  }

  ended(message) {
    if (!this.current(message)) return;
    this.stats.ended = message.error || message.reason;
    this.el.note.textContent = message.error ? `cannot play ${message.video}: ${message.error}` : `${message.video}: ${message.reason}`;
    this.playing = null;
  }

  binary(buffer) {
    const { kind, header, payload } = unpack(buffer);
    if (kind === POSTER) return { poster: header.video, jpeg: payload };
    if (!this.current(header)) return null;
    if (kind === FRAME) this.frame(header, payload);
    else if (kind === SOUND) this.sound(header, payload);
    return null;
  }

  frame(header, bytes) {
    const s = this.stats;
    s.framesReceived++;
    s.skippedTotal = header.skipped_total;
    this.window.bytes += bytes.length;
    if (this.seeking) return;
    if (header.codec === "jpeg") {
      s.jpegFrames++;
      // A bridge frame: the H.264 run before it does not continue.
      this.needKeyframe = true;
      // A picture decoded after a reset (a seek, a new playback) belongs to what was forgotten.
      const generation = this.generation;
      createImageBitmap(new Blob([bytes], { type: "image/jpeg" }))
        .then((image) => {
          if (generation === this.generation) this.decoded(header.pts, header.index, image);
          else image.close();
        })
        .catch(() => s.framesDropped++);
      return;
    }
    s.h264Frames++;
    if (header.keyframe) {
      const codec = avcCodec(bytes);
      if (codec && (codec !== this.codec || !this.decoder || this.decoder.state !== "configured")) {
        this.configure(codec);
      }
      this.needKeyframe = false;
    } else if (this.needKeyframe || !this.decoder || this.decoder.state !== "configured") {
      s.framesDropped++;
      return;
    }
    this.pending = this.pending || new Map();
    this.pending.set(Math.round(header.pts * 1e6), header.index);
    this.decoder.decode(new EncodedVideoChunk({
      type: header.keyframe ? "key" : "delta",
      timestamp: Math.round(header.pts * 1e6),
      data: bytes,
    }));
  }

  configure(codec) {
    if (!this.decoder || this.decoder.state === "closed") {
      this.decoder = new VideoDecoder({
        output: (frame) => {
          const index = this.pending ? this.pending.get(frame.timestamp) : -1;
          if (this.pending) this.pending.delete(frame.timestamp);
          this.decoded(frame.timestamp / 1e6, index, frame);
        },
        error: (e) => {
          this.note(`video decoder: ${e.message}`);
          this.needKeyframe = true;
          this.codec = null;
        },
      });
    }
    this.decoder.configure({ codec, optimizeForLatency: true });
    this.codec = codec;
  }

  decoded(pts, index, image) {
    this.stats.framesDecoded++;
    if (this.wallBase === null) this.wallBase = performance.now() / 1000 - pts;
    this.queue.push({ pts, index, image });
    this.queue.sort((a, b) => a.pts - b.pts);
    while (this.queue.length > MAX_QUEUED_FRAMES) {
      this.queue.shift().image.close();
      this.stats.framesDropped++;
    }
  }

  sound(header, payload) {
    const s = this.stats;
    if (!this.audio || this.seeking) return;
    if (!this.audioConfigured) {
      if (!this.audioDecoder || this.audioDecoder.state === "closed") {
        this.audioDecoder = new AudioDecoder({
          output: (data) => this.schedule(data),
          error: (e) => {
            this.note(`sound decoder: ${e.message}`);
            this.audioConfigured = false;
          },
        });
      }
      this.audioDecoder.configure({ codec: "opus", sampleRate: 48000, numberOfChannels: 2 });
      this.audioConfigured = true;
    }
    const frameSeconds = (this.playing && this.playing.sound ? this.playing.sound.frame_samples : 960) / 48000;
    let offset = 0;
    header.sizes.forEach((size, n) => {
      const pts = header.pts + n * frameSeconds;
      s.soundPackets++;
      this.audioDecoder.decode(new EncodedAudioChunk({
        type: "key",
        timestamp: Math.round(pts * 1e6),
        data: payload.subarray(offset, offset + size),
      }));
      offset += size;
    });
  }

  schedule(data) {
    const s = this.stats;
    s.soundDecoded++;
    const pts = data.timestamp / 1e6;
    if (this.audio.state !== "running") {
      // Not allowed to sound yet (no click on this page): the pictures keep the wall clock.
      this.audio.resume();
      s.soundLate++;
      data.close();
      return;
    }
    if (this.soundBase === null) {
      this.soundBase = this.audio.currentTime + SOUND_LEAD_SECONDS - pts;
      // The pictures follow the sound's clock from now on.
      this.wallBase = null;
    }
    const at = this.soundBase + pts;
    if (at < this.audio.currentTime) {
      s.soundLate++;
      data.close();
      return;
    }
    const buffer = this.audio.createBuffer(data.numberOfChannels, data.numberOfFrames, data.sampleRate);
    for (let channel = 0; channel < data.numberOfChannels; channel++) {
      const plane = new Float32Array(data.numberOfFrames);
      data.copyTo(plane, { planeIndex: channel, format: "f32-planar" });
      buffer.copyToChannel(plane, channel);
    }
    data.close();
    const source = this.audio.createBufferSource();
    source.buffer = buffer;
    source.connect(this.gain);
    source.onended = () => this.sources.delete(source);
    this.sources.add(source);
    source.start(at);
    s.soundScheduled++;
  }

  // Where the playback is now: the sound's clock when sound plays, else the wall clock.
  position() {
    if (this.frozen !== null && this.frozen !== undefined) return this.frozen;
    if (this.soundBase !== null && this.audio) return this.audio.currentTime - this.soundBase;
    if (this.wallBase === null) return null;
    const now = this.pausedAt !== null ? this.pausedAt : performance.now();
    return now / 1000 - this.wallBase;
  }

  tick() {
    const s = this.stats;
    const now = performance.now();
    if (now - this.window.at >= 1000) {
      const seconds = (now - this.window.at) / 1000;
      s.fps = Math.round((this.window.frames / seconds) * 10) / 10;
      s.kbitsPerSecond = Math.round((this.window.bytes * 8) / 1000 / seconds);
      this.window = { at: now, frames: 0, bytes: 0 };
    }
    const position = this.position();
    if (position === null) return this.overlay();
    let shown = null;
    while (this.queue.length && this.queue[0].pts <= position + 0.004) {
      if (shown) {
        shown.image.close();
        s.framesDropped++;
      }
      shown = this.queue.shift();
    }
    if (shown) {
      const image = shown.image;
      const width = image.displayWidth || image.width;
      const height = image.displayHeight || image.height;
      if (this.canvas.width !== width || this.canvas.height !== height) {
        this.canvas.width = width;
        this.canvas.height = height;
      }
      this.context.drawImage(image, 0, 0, width, height);
      image.close();
      s.framesDrawn++;
      if (s.firstFrameMs === null) s.firstFrameMs = Math.round(performance.now() - this.playAskedAt);
      if (this.landing) {
        s.seekLanded = shown.index;
        this.landing = false;
      }
      this.window.frames++;
      s.lastIndex = shown.index;
      s.width = width;
      s.height = height;
      s.lateMs = Math.round((position - shown.pts) * 1000);
      s.position = shown.pts;
    }
    this.overlay();
  }

  overlay() {
    const s = this.stats;
    const sound = s.sound
      ? `sound opus ${Math.round(s.sound.bitrate / 1000)} kbit/s${this.muted ? " (muted)" : ` vol ${Math.round(this.volume * 100)}%`}`
      : "no sound";
    this.el.stats.textContent =
      `${s.resolution} ${s.width}x${s.height} ${s.codec} · ${s.fps} fps · ${s.kbitsPerSecond} kbit/s\n` +
      `skipped ${s.skippedTotal} · dropped ${s.framesDropped} · late ${s.lateMs} ms · ${sound}`;
    this.el.clock.textContent = `${clock(s.position)} / ${clock(s.duration)}`;
    if (!this.seekDragging) this.el.seek.value = String(s.position);
  }

  togglePause() {
    if (!this.playing) return;
    this.send({ type: "steer", action: this.stats.paused ? "resume" : "pause" });
  }

  seekTo(seconds) {
    if (!this.playing) return;
    const target = Math.max(0, Math.min(seconds, this.stats.duration));
    this.seeking = true;
    this.send({ type: "steer", action: "seek", seconds: target });
  }

  switchTo(resolution) {
    this.el.resolution.value = resolution;
    if (this.playing) this.send({ type: "steer", action: "switch", resolution });
  }

  setVolume(volume) {
    this.volume = Math.max(0, Math.min(1, volume));
    if (this.gain) this.gain.gain.value = this.muted ? 0 : this.volume;
  }

  toggleMute() {
    this.muted = !this.muted;
    this.el.mute.textContent = this.muted ? "Unmute" : "Mute";
    this.setVolume(this.volume);
  }

  // The window player's keys; true when the key was the player's.
  key(event) {
    switch (event.key) {
      case " ": this.togglePause(); return true;
      case "ArrowLeft": this.seekTo(this.stats.position - SEEK_STEP_SECONDS); return true;
      case "ArrowRight": this.seekTo(this.stats.position + SEEK_STEP_SECONDS); return true;
      case "1": this.switchTo("240p"); return true;
      case "2": this.switchTo("720p"); return true;
      case "3": this.switchTo("1440p"); return true;
      case "a": this.switchTo("auto"); return true;
      case "9": this.setVolume(this.volume - 0.1); return true;
      case "0": this.setVolume(this.volume + 0.1); return true;
      case "m": this.toggleMute(); return true;
      default: return false;
    }
  }
}
