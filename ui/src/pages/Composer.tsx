import type { Route } from "../router";

export default function Composer({ route }: { route: Route }) {
  return (
    <section>
      <h1>Composer</h1>
      <p className="muted">{route.page}</p>
    </section>
  );
}
