import type { Route } from "../router";

export default function Executions({ route }: { route: Route }) {
  return (
    <section>
      <h1>Executions</h1>
      <p className="muted">{route.page}</p>
    </section>
  );
}
