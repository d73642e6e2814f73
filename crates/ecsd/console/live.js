// Following the event stream: an EventSource on /console/events/stream that, when the stream
// drops, shows it, and reconnects by itself from the last sequence number it saw; it can be
// paused. Each event (and each reconnection, which may have missed some) is passed on.

const RETRY_MS = [500, 1000, 2000, 4000, 8000];

export class Live {
  constructor(indicator, onChange, onDrop) {
    this.indicator = indicator;
    this.onChange = onChange;
    this.onDrop = onDrop;
    this.lastSeq = null;
    this.source = null;
    this.paused = false;
    this.attempt = 0;
    this.timer = null;
  }

  start() {
    this.stop();
    this.paused = false;
    this.connect();
  }

  connect() {
    clearTimeout(this.timer);
    const query = this.lastSeq === null ? 'from=now' : `after=${this.lastSeq}`;
    this.show('connecting', 'Connecting…');
    const source = new EventSource(`/console/events/stream?${query}`);
    this.source = source;
    source.onopen = () => {
      const resumed = this.attempt > 0;
      this.attempt = 0;
      this.show('live', 'Live');
      if (resumed) this.onChange(null);
    };
    source.onmessage = (message) => {
      this.lastSeq = Number(message.lastEventId);
      let event = null;
      try { event = JSON.parse(message.data); } catch { /* not an envelope */ }
      this.onChange(event);
    };
    source.onerror = () => {
      // The browser would retry on its own, but without telling; this shows the drop and
      // resumes from the last event seen.
      source.close();
      if (this.source !== source) return;
      this.source = null;
      this.show('disconnected', 'Disconnected — reconnecting');
      const wait = RETRY_MS[Math.min(this.attempt, RETRY_MS.length - 1)];
      this.attempt += 1;
      this.timer = setTimeout(() => this.connect(), wait);
      this.onDrop();
    };
  }

  pause() {
    this.paused = true;
    this.stop();
    this.show('paused', 'Paused');
  }

  resume() {
    this.paused = false;
    this.attempt = 1;
    this.connect();
  }

  stop() {
    clearTimeout(this.timer);
    if (this.source) {
      const source = this.source;
      this.source = null;
      source.close();
    }
  }

  show(state, text) {
    this.indicator.dataset.state = state;
    this.indicator.textContent = text;
  }
}
