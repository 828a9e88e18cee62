// mediasrv room protocol client (see docs/signaling.md). Two RTCPeerConnections, as the server
// expects: `pub` carries what we send (we offer), `sub` what we receive (the server offers).
"use strict";

class MediasrvRoom extends EventTarget {
  constructor(baseUrl, room, token) {
    super();
    this.baseUrl = baseUrl;
    this.entryUrl = baseUrl;
    this.nodeUrls = [];  // in a cluster: the serving nodes, from the joined reply (rejoin tries them)
    this.room = room;
    this.token = token;
    this.pub = null;
    this.sub = null;
    this.remoteTracks = new Map(); // mid -> {info, track}
    this.published = [];
    this.pending = new Map();
    this.nextId = 1;
    this.subQueue = Promise.resolve();
    // TURN servers come with the joined reply (empty when the server has none); "relay" forces them.
    this.iceServers = [];
    this.iceTransportPolicy = "all";
  }

  _newPeerConnection() {
    const pc = new RTCPeerConnection({bundlePolicy: "max-bundle", iceServers: this.iceServers,
                                      iceTransportPolicy: this.iceTransportPolicy});
    pc.addEventListener("connectionstatechange", () => this._watch(pc));
    return pc;
  }

  // A media connection that failed is reported (`media_failed`: the page joins again). One that
  // is disconnected may be riding out a short outage, which ICE survives by itself; meanwhile a
  // ping every 2 s on the room connection makes a dead one show: after an outage that outlasted
  // the server's ICE consent, the server has closed it (close 4000 "connection_lost", or a reset
  // once the network is back), and the page's `closed` handler joins again.
  _watch(pc) {
    if ((pc !== this.pub && pc !== this.sub) || this.left) return;  // replaced by rejoin(), or over
    if (pc.connectionState === "failed") {
      this._emit("media_failed", {which: pc === this.pub ? "pub" : "sub"});
    } else if (pc.connectionState === "disconnected" && !pc.pinging) {
      pc.pinging = setInterval(() => {
        if (pc.connectionState !== "disconnected" || (pc !== this.pub && pc !== this.sub)) {
          clearInterval(pc.pinging);
          pc.pinging = null;
          return;
        }
        try { this.send({type: "ping"}); } catch (e) { /* closed: its handler takes over */ }
      }, 2000);
    }
  }

  connect(redirects = 0) {
    const wsUrl = this.baseUrl.replace(/^http/, "ws") + "/rooms/" + encodeURIComponent(this.room) + "/ws";
    const ws = this.ws = new WebSocket(wsUrl);
    ws.onmessage = (ev) => this._onMessage(JSON.parse(ev.data));
    ws.onclose = (ev) => {
      for (const waiter of this.pending.values()) waiter.reject(new Error("connection closed"));
      this.pending.clear();
      this._emit("closed", {code: ev.code, reason: ev.reason});
    };
    return new Promise((resolve, reject) => {
      ws.onopen = () => this.request({type: "join", token: this.token}).then((joined) => {
        if (joined.type === "redirect" && redirects < 3) {
          // In a cluster another node serves the room (close 4307): join there, same token.
          ws.onclose = null;
          ws.close();
          this.baseUrl = joined.node_url;
          this.connect(redirects + 1).then(resolve, reject);
          return;
        }
        this.iceServers = joined.iceServers || [];
        if (joined.nodes) this.nodeUrls = joined.nodes;
        resolve(joined);
      }, reject);
      ws.onerror = () => reject(new Error("websocket error"));
    });
  }

  // Join again with the same token after the connection was lost (the node died, or drained and
  // closed the visit): new peer connections, the same local tracks published again. Tries the
  // entry, the node it was on and the others it knew of in turn, with growing pauses, for up to
  // `patienceMs`: a dead node's rooms move only once its lease has expired, and until then a live
  // node still sends the client to the dead one. `rejoinLog` says how each try ended.
  async rejoin(patienceMs = 60000) {
    const started = performance.now();
    this.rejoinLog = [];
    // Leaving (or the session ending for good) while this runs stops it: nothing is published again.
    const stillWanted = () => {
      if (this.left) { this.dropSocket(1000, "left"); throw new Error("left while rejoining"); }
    };
    for (let i = 0; ; i++) {
      stillWanted();
      for (const pc of [this.pub, this.sub]) if (pc) pc.close();
      this.pub = this.sub = null;
      this.remoteTracks.clear();
      this.subQueue = Promise.resolve();
      const urls = [...new Set([this.entryUrl, this.baseUrl, ...this.nodeUrls])];
      const url = this.baseUrl = urls[i % urls.length];
      try {
        // A node that accepts the connection but never answers must not hold the rejoin up.
        let timer;
        const timeout = new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error("no answer to join")), 10000);
        });
        const joined = await Promise.race([this.connect(), timeout]).finally(() => clearTimeout(timer));
        stillWanted();
        if (this._lastPublish) await this.publish(...this._lastPublish);
        stillWanted();
        this._emit("rejoined", joined);
        return joined;
      } catch (e) {
        if (this.left) throw e;
        this.dropSocket();
        const elapsed = performance.now() - started;
        const via = this.baseUrl !== url ? " (sent to " + this.baseUrl + ")" : "";
        this.rejoinLog.push(Math.round(elapsed) + " ms " + url + via + ": " + e.message);
        const pause = Math.min(2000, 250 * 2 ** i);
        if (elapsed + pause > patienceMs) throw e;
        await new Promise((r) => setTimeout(r, pause));
      }
    }
  }

  request(msg) {
    const request_id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      this.pending.set(request_id, {resolve, reject});
      this.ws.send(JSON.stringify({...msg, request_id}));
    });
  }

  send(msg) { this.ws.send(JSON.stringify(msg)); }

  _emit(type, detail) { this.dispatchEvent(new CustomEvent(type, {detail})); }

  _onMessage(msg) {
    const waiter = msg.request_id ? this.pending.get(msg.request_id) : null;
    if (waiter) {
      this.pending.delete(msg.request_id);
      if (msg.type === "error") waiter.reject(Object.assign(new Error(msg.message), {code: msg.code}));
      else waiter.resolve(msg);
    }
    if (msg.type === "nodes") this.nodeUrls = msg.nodes;  // the cluster's serving nodes changed
    if (msg.type === "offer") this.subQueue = this.subQueue.then(() => this._onOffer(msg));
    this._emit(msg.type, msg);
    this._emit("message", msg);
  }

  async _gathered(pc) {
    if (pc.iceGatheringState === "complete") return;
    await new Promise((resolve) => {
      const check = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", check);
      setTimeout(resolve, 3000);
    });
  }

  async _onOffer(msg) {
    if (!this.sub) {
      this.sub = this._newPeerConnection();
      this.sub.ontrack = (ev) => {
        const mid = ev.transceiver.mid;
        const entry = {info: this._midInfo[mid], track: ev.track, mid};
        this.remoteTracks.set(mid, entry);
        this._emit("track", entry);
      };
    }
    this._midInfo = msg.tracks;
    for (const [mid, info] of Object.entries(msg.tracks)) {
      const entry = this.remoteTracks.get(mid);
      if (entry) entry.info = info;
    }
    await this.sub.setRemoteDescription({type: "offer", sdp: msg.sdp});
    await this.sub.setLocalDescription(await this.sub.createAnswer());
    await this._gathered(this.sub);
    this.send({type: "answer", sdp: this.sub.localDescription.sdp});
  }

  // Publish local tracks: [{track, source, encodings, red}], plus optional data channel labels
  // (e.g. "vitals"). `encodings` (RTCRtpEncodingParameters, lowest resolution first) asks for
  // simulcast; a browser that refuses them publishes one encoding. `red` sends audio as RFC 2198
  // RED (each packet carries the previous frame too: one lost packet costs no audio, for about
  // 30 kbit/s more on the wire); a browser without it sends plain Opus.
  async publish(items, dataChannels = []) {
    if (!this.pub) this.pub = this._newPeerConnection();
    const pending = [];
    for (const {track, source, encodings, red} of items) {
      let tr;
      try {
        tr = this.pub.addTransceiver(track, encodings ? {direction: "sendonly", sendEncodings: encodings}
          : {direction: "sendonly"});
      } catch (e) {
        tr = this.pub.addTransceiver(track, {direction: "sendonly"});
      }
      if (red && track.kind === "audio") preferRed(tr);
      pending.push({tr, source});
    }
    this.channels = this.channels || {};
    for (const label of dataChannels) this.channels[label] = this.pub.createDataChannel(label);
    await this.pub.setLocalDescription(await this.pub.createOffer());
    await this._gathered(this.pub);
    const sources = {};
    for (const {tr, source} of pending) sources[tr.mid] = source;
    const reply = await this.request({type: "publish", sdp: this.pub.localDescription.sdp, sources});
    await this.pub.setRemoteDescription({type: "answer", sdp: reply.sdp});
    this.published = reply.tracks;
    this._lastPublish = [items, dataChannels];  // published again by rejoin()
    return reply.tracks;
  }

  chat(text) { this.send({type: "chat", text}); }

  // The most of a simulcast track's height this viewer wants (null: no cap).
  setMaxResolution(trackId, height) {
    return this.request({type: "set_max_resolution", track: trackId, height});
  }

  // Closes the room connection without a `closed` event (what was waiting for an answer fails):
  // `code` 4100 tells the server this client is coming back (others see `disconnected`).
  dropSocket(code = 1000, reason = "") {
    const ws = this.ws;
    if (!ws) return;
    ws.onclose = null;
    for (const waiter of this.pending.values()) waiter.reject(new Error("connection closed"));
    this.pending.clear();
    try { ws.close(code, reason); } catch (e) { /* already closed */ }
  }

  leave() {
    this.left = true;
    try { this.send({type: "leave"}); } catch (e) { /* already closed */ }
    this.end();
  }

  // The session is over (left, or ended by the server for good): media closed, no rejoin.
  end() {
    this.left = true;
    this.dropSocket(1000, "left");
    if (this.pub) this.pub.close();
    if (this.sub) this.sub.close();
  }
}

// Puts audio/red first in an audio transceiver's codecs, if the browser has it (Chromium offers it
// second, and sends plain Opus, unless a page asks).
function preferRed(transceiver) {
  if (!transceiver.setCodecPreferences || !window.RTCRtpReceiver || !RTCRtpReceiver.getCapabilities) return;
  const codecs = (RTCRtpReceiver.getCapabilities("audio") || {codecs: []}).codecs;
  const red = codecs.filter((c) => c.mimeType.toLowerCase() === "audio/red");
  if (!red.length) return;
  try {
    transceiver.setCodecPreferences([...red, ...codecs.filter((c) => !red.includes(c))]);
  } catch (e) { /* codecs refused: plain Opus */ }
}

window.MediasrvRoom = MediasrvRoom;
