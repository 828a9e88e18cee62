// mediasrv room protocol client (see docs/signaling.md). Two RTCPeerConnections, as the server
// expects: `pub` carries what we send (we offer), `sub` what we receive (the server offers).
"use strict";

class MediasrvRoom extends EventTarget {
  constructor(baseUrl, room, token) {
    super();
    this.baseUrl = baseUrl;
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
    return new RTCPeerConnection({bundlePolicy: "max-bundle", iceServers: this.iceServers,
                                  iceTransportPolicy: this.iceTransportPolicy});
  }

  connect() {
    const wsUrl = this.baseUrl.replace(/^http/, "ws") + "/rooms/" + encodeURIComponent(this.room) + "/ws";
    this.ws = new WebSocket(wsUrl);
    this.ws.onmessage = (ev) => this._onMessage(JSON.parse(ev.data));
    this.ws.onclose = (ev) => this._emit("closed", {code: ev.code, reason: ev.reason});
    return new Promise((resolve, reject) => {
      this.ws.onopen = () => this.request({type: "join", token: this.token}).then((joined) => {
        this.iceServers = joined.iceServers || [];
        resolve(joined);
      }, reject);
      this.ws.onerror = () => reject(new Error("websocket error"));
    });
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

  // Publish local tracks: [{track, source}], plus optional data channel labels (e.g. "vitals").
  async publish(items, dataChannels = []) {
    if (!this.pub) this.pub = this._newPeerConnection();
    const pending = [];
    for (const {track, source} of items) {
      const tr = this.pub.addTransceiver(track, {direction: "sendonly"});
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
    return reply.tracks;
  }

  chat(text) { this.send({type: "chat", text}); }

  leave() {
    try { this.send({type: "leave"}); } catch (e) { /* already closed */ }
    if (this.pub) this.pub.close();
    if (this.sub) this.sub.close();
  }
}

window.MediasrvRoom = MediasrvRoom;
