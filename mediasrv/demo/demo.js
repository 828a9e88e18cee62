"use strict";
// Demo page logic. Tests drive the same page: window.demo exposes the room client.
(function () {
  const $ = (sel) => document.querySelector(sel);
  const params = new URLSearchParams(location.search);
  const hash = new URLSearchParams(location.hash.slice(1));
  // Audio as RED unless ?red=0 (redundant Opus: one lost packet costs no audio; the server sends a
  // viewer whose link is tight the primary alone).
  // Camera simulcast (three layers: 1/4, 1/2 and full size, lowest first) unless ?simulcast=0, or
  // when the browser has no scaleResolutionDownBy (it then publishes one encoding).
  const simulcastEncodings = () => {
    if (params.get("simulcast") === "0" || !window.RTCRtpSender || !("getParameters" in RTCRtpSender.prototype)) {
      return undefined;
    }
    return [
      {rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150000},
      {rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500000},
      {rid: "f", maxBitrate: 1500000},
    ];
  };
  const form = $("#join");
  for (const k of ["room", "identity", "role"]) if (params.get(k)) form.elements[k].value = params.get(k);
  window.demo = {room: null, errors: [], chat: [], events: [], quality: {}};

  function status(text) { $("#status").textContent = text; }

  // Connection quality (docs/signaling.md): the worse of a participant's uplink and downlink, shown
  // beside its name unless excellent.
  function qualityNote(who) {
    const levels = Object.values(window.demo.quality[who] || {});
    const worst = ["lost", "poor", "good"].find((l) => levels.includes(l));
    return worst ? " · connection " + worst : "";
  }

  function caption(info) {
    return info ? info.participant + " (" + info.source + ")" + qualityNote(info.participant) : "remote";
  }

  async function token(room, identity, role) {
    if (hash.get("token")) return hash.get("token");
    const r = await fetch("/demo/token", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({room, identity, role})});
    const body = await r.json();
    if (!r.ok) throw new Error(body.error.message);
    return body.token;
  }

  function addRemote(entry) {
    if (entry.track.kind !== "video") {
      const audio = document.createElement("audio");
      audio.autoplay = true; audio.srcObject = new MediaStream([entry.track]);
      document.body.appendChild(audio);
      return;
    }
    const fig = document.createElement("figure");
    fig.id = "remote-" + entry.mid;
    const video = document.createElement("video");
    video.autoplay = true; video.playsInline = true; video.muted = true;
    video.srcObject = new MediaStream([entry.track]);
    const cap = document.createElement("figcaption");
    cap.textContent = caption(entry.info);
    fig.append(video, cap);
    $("#remotes").appendChild(fig);
    entry.track.addEventListener("ended", () => fig.remove());
  }

  async function join(room, identity, role) {
    status("connecting…");
    window.demo.joinStartedAt = performance.now();
    const client = new MediasrvRoom(location.origin, room, await token(room, identity, role));
    if (params.get("relay")) client.iceTransportPolicy = "relay";  // TURN only (testing the relay)
    window.demo.room = client;
    client.addEventListener("message", (ev) => window.demo.events.push(ev.detail));
    client.addEventListener("track", (ev) => addRemote(ev.detail));
    client.addEventListener("chat", (ev) => {
      window.demo.chat.push(ev.detail);
      const li = document.createElement("li");
      li.textContent = (ev.detail.name || ev.detail.from) + ": " + ev.detail.text;
      $("#messages").appendChild(li);
    });
    client.addEventListener("error", (ev) => window.demo.errors.push(ev.detail));
    client.addEventListener("connection_quality", (ev) => {
      const m = ev.detail;
      (window.demo.quality[m.participant] = window.demo.quality[m.participant] || {})[m.scope] = m.quality;
      for (const [mid, e] of client.remoteTracks) {
        const cap = document.querySelector("#remote-" + CSS.escape(mid) + " figcaption");
        if (cap && e.info && e.info.participant === m.participant) cap.textContent = caption(e.info);
      }
      if (m.participant === identity) $("#local").nextElementSibling.textContent = "you" + qualityNote(identity);
    });
    // Someone whose connection went (an outage) is usually back within seconds: say so, rather
    // than letting their tile vanish unexplained, until they join again.
    const away = new Set();
    const showAway = () => {
      $("#notice").textContent = [...away].map((who) => who + " lost their connection; waiting for them to come back").join(" · ");
    };
    client.addEventListener("participant_left", (ev) => {
      const {identity: who, reason} = ev.detail;
      delete window.demo.quality[who];
      if (reason === "disconnected" || reason === "connection_lost") away.add(who); else away.delete(who);
      showAway();
    });
    client.addEventListener("participant_joined", (ev) => { away.delete(ev.detail.participant.identity); showAway(); });
    client.addEventListener("waiting", () => status("in the waiting room"));
    client.addEventListener("track_unpublished", (ev) => {
      for (const [mid, e] of client.remoteTracks) if (e.info && e.info.id === ev.detail.track.id) {
        const fig = document.getElementById("remote-" + mid); if (fig) fig.remove();
      }
    });
    // Lost the node (1006: it died, or the connection did not survive a network outage;
    // 1001/1012: it went away), the visit was closed by a node stopping after a drain, moved to
    // another node (4307 after a `redirect`: this node had lost the room), or our media
    // connections were given up (4000 "connection_lost": an outage longer than ICE consent), or
    // one of them failed here: join again with the same token; placement finds the visit's node.
    let draining = false;
    let reconnecting = false;
    client.addEventListener("server_draining", () => { draining = true; });
    const moves = (ev) => [1001, 1006, 1011, 1012, 4307].includes(ev.detail.code)
      || (ev.detail.code === 4000 && (draining || ev.detail.reason === "room_closed:shutdown"
                                      || ev.detail.reason === "connection_lost"));
    // The network may still be down when the loss shows: keep trying for a while.
    const RECONNECT_PATIENCE_MS = 300000;
    const reconnect = () => {
      if (client.left || reconnecting) return;
      reconnecting = true;
      draining = false;
      // (Quietly, with 4100: the server tells the others this participant is coming back.)
      client.dropSocket(4100, "reconnecting");
      status("reconnecting…");
      window.demo.reconnects = (window.demo.reconnects || 0) + 1;
      for (const fig of document.querySelectorAll("#remotes figure")) fig.remove();
      window.demo.quality = {};  // the node it rejoins tells what is not excellent
      away.clear();  // and who is still away
      showAway();
      client.rejoin(RECONNECT_PATIENCE_MS)
        .then(() => status("rejoined " + room + " as " + identity + " (" + role + ")"),
          (e) => { window.demo.errors.push(String(e)); status("error: " + e.message); })
        .finally(() => { reconnecting = false; });
    };
    client.addEventListener("closed", (ev) => {
      status("disconnected (" + ev.detail.code + ")");
      // A try of a rejoin under way (4503: no node takes the room yet; a node going down): the
      // rejoin tries again by itself.
      if (reconnecting) return;
      // Anything else (removed, replaced elsewhere, the room closed, a media connection that never
      // came up) ends the visit here: its media is closed, so no failure brings it back.
      if (moves(ev)) reconnect(); else client.end();
    });
    client.addEventListener("media_failed", reconnect);
    const joined = await client.connect();
    status("joined " + room + " as " + identity + " (" + role + ")");
    if (role !== "observer") {
      const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: {width: 1280, height: 720}});
      $("#local").srcObject = stream;
      await client.publish([
        {track: stream.getAudioTracks()[0], source: "microphone", red: params.get("red") !== "0"},
        {track: stream.getVideoTracks()[0], source: "camera", encodings: simulcastEncodings()},
      ], params.get("vitals") ? ["vitals"] : []);
      const toggle = (btn, track, on, off) => {
        btn.disabled = false;
        btn.onclick = () => { track.enabled = !track.enabled; btn.textContent = track.enabled ? on : off; };
      };
      toggle($("#mute-audio"), stream.getAudioTracks()[0], "Mute microphone", "Unmute microphone");
      toggle($("#mute-video"), stream.getVideoTracks()[0], "Stop camera", "Start camera");
    }
    $("#leave").disabled = false;
    $("#leave").onclick = () => { client.leave(); status("left"); };
    window.demo.joined = joined;
    return joined;
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    join(form.elements.room.value, form.elements.identity.value, form.elements.role.value)
      .catch((e) => { window.demo.errors.push(String(e)); status("error: " + e.message); });
  });
  $("#chat").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = ev.target.elements.text;
    if (window.demo.room && input.value) { window.demo.room.chat(input.value); input.value = ""; }
  });
  if (params.get("autojoin")) form.requestSubmit();
})();
