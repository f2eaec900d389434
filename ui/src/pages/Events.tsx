// Events: a live tail of the tenant's events (SubscribeEvents over gRPC-Web, with a type list and a
// CEL filter), publishing one (PublishEvent: what starts triggered patterns and resumes waits), and
// the registered event types with their JSON Schemas (RegisterEventType / ListEventTypes).
import { useEffect, useRef, useState, type FormEvent } from "react";
import type { JsonObject } from "@bufbuild/protobuf";
import { errorText, nexus } from "../api";
import type { Event, EventType } from "../gen/nexus/v1/nexus_pb";
import type { Route } from "../router";
import { useSession } from "../session";
import "./events.css";

/** The tail keeps this many events (newest first); older ones are dropped and counted. */
const TAIL_LIMIT = 500;

function time(e: { time?: { seconds: bigint; nanos: number } }): string {
  if (!e.time) return "";
  return new Date(Number(e.time.seconds) * 1000 + Math.floor(e.time.nanos / 1e6)).toISOString().replace("T", " ").replace("Z", "");
}

function parseTypes(text: string): string[] {
  return text
    .split(/[\s,]+/)
    .map((t) => t.trim())
    .filter(Boolean);
}

function Tail({ initialTypes }: { initialTypes: string }) {
  const [types, setTypes] = useState(initialTypes);
  const [filter, setFilter] = useState("");
  const [events, setEvents] = useState<Event[]>([]);
  const [dropped, setDropped] = useState(0);
  const [live, setLive] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const abort = useRef<AbortController | null>(null);

  const stop = () => {
    abort.current?.abort();
    abort.current = null;
    setLive(false);
  };

  const start = async () => {
    stop();
    const controller = new AbortController();
    abort.current = controller;
    setError(null);
    setLive(true);
    try {
      for await (const e of nexus.subscribeEvents({ types: parseTypes(types), filter: filter.trim() }, { signal: controller.signal })) {
        setEvents((prev) => {
          const next = [e, ...prev];
          if (next.length > TAIL_LIMIT) {
            setDropped((d) => d + next.length - TAIL_LIMIT);
            next.length = TAIL_LIMIT;
          }
          return next;
        });
      }
      if (!controller.signal.aborted) setError("The server ended the subscription (it is shutting down or restarting).");
    } catch (err) {
      if (!controller.signal.aborted) setError(errorText(err));
    } finally {
      if (abort.current === controller) {
        abort.current = null;
        setLive(false);
      }
    }
  };

  // Start on open; stop when leaving the page.
  useEffect(() => {
    void start();
    return () => abort.current?.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    void start();
  };

  return (
    <section className="panel events-tail" aria-labelledby="tail-h">
      <h2 id="tail-h">Live events</h2>
      <form className="row" onSubmit={submit}>
        <label>
          Types
          <input value={types} onChange={(e) => setTypes(e.target.value)} placeholder="all types (or user.created, order.*)" />
        </label>
        <label className="grow">
          <span>
            Filter (CEL over <code>event</code>)
          </span>
          <input value={filter} onChange={(e) => setFilter(e.target.value)} placeholder="${{ event.data.plan == 'pro' }}" />
        </label>
        <button type="submit" className="primary">
          {live ? "Restart" : "Start"}
        </button>
        <button type="button" onClick={stop} disabled={!live}>
          Stop
        </button>
        <button type="button" onClick={() => (setEvents([]), setDropped(0))} disabled={events.length === 0}>
          Clear
        </button>
      </form>
      <p className="muted" aria-live="polite" data-testid="tail-status">
        {live ? "Listening" : "Stopped"} · {events.length} event{events.length === 1 ? "" : "s"}
        {dropped > 0 && ` (${dropped} older dropped)`}
      </p>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      {events.length === 0 ? (
        <p className="muted">No event yet. Publish one, or run a pattern that emits one (user_creation emits user.created).</p>
      ) : (
        <ol className="event-list" aria-label="Received events">
          {events.map((e) => (
            <li key={`${e.source}/${e.id}`}>
              <details>
                <summary>
                  <span className="ev-type">{e.type}</span> <span className="muted">{time(e)}</span>
                  {e.subject && <span className="ev-subject">subject {e.subject}</span>}
                  <span className="muted ev-id">
                    {e.source} · {e.id}
                  </span>
                </summary>
                <pre>{JSON.stringify(e.data ?? {}, null, 2)}</pre>
              </details>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}

function Publish() {
  const session = useSession();
  const allowed = session.can("run");
  const [type, setType] = useState("user.verified");
  const [subject, setSubject] = useState("");
  const [id, setId] = useState("");
  const [data, setData] = useState('{\n  "user_id": ""\n}');
  const [result, setResult] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setResult(null);
    setError(null);
    let parsed: unknown;
    try {
      parsed = data.trim() === "" ? {} : JSON.parse(data);
    } catch (err) {
      setError(`data: not JSON — ${(err as Error).message}`);
      return;
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      setError("data: must be a JSON object");
      return;
    }
    setBusy(true);
    try {
      const r = await nexus.publishEvent({
        event: { type: type.trim(), subject: subject.trim(), id: id.trim(), source: "", data: parsed as JsonObject },
      });
      setResult(r.duplicate ? `Already published: ${r.source} · ${r.id} (nothing happens twice)` : `Published ${r.source} · ${r.id}`);
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <section className="panel" aria-labelledby="publish-h">
      <h2 id="publish-h">Publish an event</h2>
      <form className="stack" onSubmit={submit}>
        <label>
          Type
          <input value={type} onChange={(e) => setType(e.target.value)} required />
        </label>
        <label>
          Subject (optional)
          <input value={subject} onChange={(e) => setSubject(e.target.value)} />
        </label>
        <label>
          Id (optional: the same id publishes once)
          <input value={id} onChange={(e) => setId(e.target.value)} placeholder="generated" />
        </label>
        <label>
          Data (JSON object)
          <textarea className="code" rows={6} value={data} onChange={(e) => setData(e.target.value)} spellCheck={false} />
        </label>
        <button
          type="submit"
          className="primary"
          disabled={!allowed || busy || !type.trim()}
          title={allowed ? undefined : "Your key may not publish events (needs the runner role)"}
        >
          Publish
        </button>
        {!allowed && <p className="muted">Your key may not publish events (it needs the runner role).</p>}
      </form>
      {result && (
        <p role="status" className="ok">
          {result}
        </p>
      )}
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
    </section>
  );
}

function EventTypes() {
  const session = useSession();
  const [types, setTypes] = useState<EventType[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [type, setType] = useState("");
  const [description, setDescription] = useState("");
  const [schema, setSchema] = useState('{\n  "type": "object",\n  "properties": {}\n}');
  const [formError, setFormError] = useState<string | null>(null);

  const load = async () => {
    try {
      setTypes((await nexus.listEventTypes({})).eventTypes);
      setError(null);
    } catch (err) {
      setError(errorText(err));
    }
  };
  useEffect(() => {
    void load();
  }, []);

  const register = async (e: FormEvent) => {
    e.preventDefault();
    setFormError(null);
    let parsed: unknown;
    try {
      parsed = JSON.parse(schema);
    } catch (err) {
      setFormError(`schema: not JSON — ${(err as Error).message}`);
      return;
    }
    try {
      await nexus.registerEventType({ eventType: { type: type.trim(), description, schema: parsed as JsonObject } });
      setType("");
      setDescription("");
      await load();
    } catch (err) {
      setFormError(errorText(err));
    }
  };

  return (
    <section className="panel" aria-labelledby="types-h">
      <h2 id="types-h">Event types</h2>
      <p className="muted">A registered type's JSON Schema types <code>event.data</code> in triggers and wait matches.</p>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      {types && types.length === 0 && <p className="muted">No event type registered.</p>}
      {types && types.length > 0 && (
        <table>
          <thead>
            <tr>
              <th scope="col">Type</th>
              <th scope="col">Description</th>
              <th scope="col">Schema</th>
            </tr>
          </thead>
          <tbody>
            {types.map((t) => (
              <tr key={t.type}>
                <td>
                  <code>{t.type}</code>
                </td>
                <td>{t.description}</td>
                <td>
                  <details>
                    <summary>schema</summary>
                    <pre>{JSON.stringify(t.schema ?? {}, null, 2)}</pre>
                  </details>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {session.can("author") && (
        <form className="stack" onSubmit={register} aria-label="Register an event type">
          <h3>Register a type</h3>
          <label>
            Type
            <input value={type} onChange={(e) => setType(e.target.value)} required placeholder="order.paid" />
          </label>
          <label>
            Description
            <input value={description} onChange={(e) => setDescription(e.target.value)} />
          </label>
          <label>
            JSON Schema of data
            <textarea className="code" rows={5} value={schema} onChange={(e) => setSchema(e.target.value)} spellCheck={false} />
          </label>
          <button type="submit" disabled={!type.trim()}>
            Register type
          </button>
          {formError && (
            <p role="alert" className="error">
              {formError}
            </p>
          )}
        </form>
      )}
    </section>
  );
}

export default function Events({ route }: { route: Route }) {
  return (
    <div className="events-page">
      <h1>Events</h1>
      <div className="events-grid">
        <Tail initialTypes={route.query.get("types") ?? ""} />
        <div className="events-side">
          <Publish />
          <EventTypes />
        </div>
      </div>
    </div>
  );
}
