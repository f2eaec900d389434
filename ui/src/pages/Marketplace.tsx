import type { Route } from "../router";

export default function Marketplace({ route }: { route: Route }) {
  return (
    <section>
      <h1>Marketplace</h1>
      <p className="muted">{route.page}</p>
    </section>
  );
}
