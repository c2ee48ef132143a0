// The tenant's event stream, read with fetch(): EventSource cannot send an Authorization
// header, and the key must never be in a URL. Starts at the end (after=now); every
// reconnect sends Last-Event-ID so nothing committed meanwhile is missed.

export function parseFrames(onFrame) {
  let buffer = "";
  let frame = { data: [] };
  return (chunk) => {
    buffer += chunk;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop(); // an unfinished line waits for the next chunk
    for (const line of lines) {
      if (line === "") {
        onFrame({ ...frame, data: frame.data.join("\n") });
        frame = { data: [] };
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") frame.data.push(value);
      else if (field === "id" || field === "event" || field === "retry") frame[field] = value;
    }
  };
}

export class EventStream {
  constructor(key, { onEvent, onState }) {
    this.key = key;
    this.onEvent = onEvent;
    this.onState = onState;
    this.lastId = null;
    this.retryMs = 1000;
    this.stopped = false;
    this.controller = null;
  }

  start() {
    this.run();
    return this;
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  async run() {
    while (!this.stopped) {
      this.controller = new AbortController();
      const headers = { Authorization: `Bearer ${this.key}`, Accept: "text/event-stream" };
      if (this.lastId) headers["Last-Event-ID"] = this.lastId;
      const url = this.lastId ? "/v1/events/stream" : "/v1/events/stream?after=now";
      try {
        const response = await fetch(url, {
          headers,
          signal: this.controller.signal,
          cache: "no-store",
          credentials: "omit",
        });
        if (response.status === 401 || response.status === 403) {
          this.onState(response.status === 403 ? "forbidden" : "unauthorized");
          return;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        this.onState("live");
        const feed = parseFrames((frame) => {
          if (frame.retry && /^\d+$/.test(frame.retry)) this.retryMs = Number(frame.retry);
          if (frame.id !== undefined) this.lastId = frame.id;
          if (frame.data) {
            try {
              this.onEvent(JSON.parse(frame.data));
            } catch (err) {
              console.error("bad event", err);
            }
          }
        });
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          feed(value);
        }
      } catch (err) {
        if (this.stopped) return;
      }
      if (this.stopped) return;
      this.onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, this.retryMs));
    }
  }
}
