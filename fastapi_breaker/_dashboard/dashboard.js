// Draws the breakers from the events stream next to this page. No framework, no build step.
// Breaker names come from the server and may come from user input: they only ever go into
// textContent, never into markup.
"use strict";

(function () {
  const table = document.getElementById("breakers");
  const connection = document.getElementById("connection");
  const empty = document.getElementById("empty");
  const changes = document.getElementById("changes");
  const updated = document.getElementById("updated");
  const rows = new Map(); // breaker name -> its row's cells
  const COLUMNS = ["state", "error", "rate", "p50", "p90", "p99", "trial"];

  function addRow(name) {
    const row = document.createElement("tr");
    const header = document.createElement("th");
    header.scope = "row";
    header.textContent = name;
    row.dataset.breaker = name;
    row.append(header);
    const cells = { row: row };
    for (const column of COLUMNS) {
      const cell = document.createElement("td");
      if (column === "state") {
        const badge = document.createElement("span");
        badge.className = "badge";
        cell.append(badge);
        cells.badge = badge;
      } else {
        cell.className = "number";
        cell.textContent = "–";
      }
      cells[column] = cell;
      row.append(cell);
    }
    rows.set(name, cells);
    table.append(row);
    empty.hidden = true;
    return cells;
  }

  function showState(cells, state) {
    cells.badge.textContent = state;
    cells.badge.className = "badge " + state;
    if (state === "closed") {
      cells.trial.textContent = "–";
    }
  }

  function seconds(value) {
    if (value === null || value === 0) {
      return "–";
    }
    if (value < 0.001) {
      return Math.round(value * 1e6) + " µs";
    }
    if (value < 1) {
      return (value * 1000).toFixed(1) + " ms";
    }
    return value.toFixed(2) + " s";
  }

  function rate(value) {
    if (value === null) {
      return "–";
    }
    return value < 10 ? value.toFixed(1) : String(Math.round(value));
  }

  function onSnapshot(message) {
    const snapshot = JSON.parse(message.data);
    const seen = new Set();
    let previous = null;
    for (const breaker of snapshot.breakers) {
      seen.add(breaker.name);
      const cells = rows.get(breaker.name) || addRow(breaker.name);
      showState(cells, breaker.state);
      cells.error.textContent = breaker.error_percentage.toFixed(1) + " %";
      cells.rate.textContent = rate(breaker.calls_per_second);
      cells.p50.textContent = seconds(breaker.latency.p50);
      cells.p90.textContent = seconds(breaker.latency.p90);
      cells.p99.textContent = seconds(breaker.latency.p99);
      cells.trial.textContent =
        breaker.retry_after === null ? "–" : breaker.retry_after.toFixed(1) + " s";
      // Keep the server's order; move a row only when it is out of place.
      const expected = previous === null ? table.firstElementChild : previous.nextElementSibling;
      if (cells.row !== expected) {
        table.insertBefore(cells.row, expected);
      }
      previous = cells.row;
    }
    for (const [name, cells] of rows) {
      if (!seen.has(name)) {
        cells.row.remove();
        rows.delete(name);
      }
    }
    empty.hidden = rows.size > 0;
    let text = "Updated " + new Date(snapshot.time * 1000).toLocaleTimeString();
    if (snapshot.dropped > 0) {
      text += " · " + snapshot.dropped + " updates skipped: this page fell behind";
    }
    updated.textContent = text;
  }

  function onState(message) {
    const change = JSON.parse(message.data);
    const cells = rows.get(change.name) || addRow(change.name);
    showState(cells, change.state);
    changes.textContent = change.name + " is now " + change.state;
  }

  const source = new EventSource("events");
  source.addEventListener("snapshot", onSnapshot);
  source.addEventListener("state", onState);
  source.addEventListener("open", function () {
    connection.textContent = "Live";
  });
  source.addEventListener("error", function () {
    connection.textContent =
      source.readyState === EventSource.CLOSED
        ? "Disconnected: the stream was refused or closed. Reload the page to try again."
        : "Reconnecting…";
  });
})();
