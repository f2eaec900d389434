import type { Route } from "../router";

export default function Graph({ route }: { route: Route }) {
  return (
    <section>
      <h1>Graph</h1>
      <p className="muted">{route.page}</p>
    </section>
  );
}
