// The shell: navigation, sign-in, and the page the hash route names.
import { lazy, Suspense, type ReactNode } from "react";
import { href, useRoute } from "./router";
import { SessionProvider, useSession } from "./session";
import { SignIn } from "./pages/SignIn";

const Catalog = lazy(() => import("./pages/Catalog"));
const Composer = lazy(() => import("./pages/Composer"));
const Marketplace = lazy(() => import("./pages/Marketplace"));
const Executions = lazy(() => import("./pages/Executions"));
const Graph = lazy(() => import("./pages/Graph"));
const Events = lazy(() => import("./pages/Events"));
const Assist = lazy(() => import("./pages/Assist"));

const PAGES: { page: string; label: string }[] = [
  { page: "composer", label: "Composer" },
  { page: "catalog", label: "Catalog" },
  { page: "marketplace", label: "Marketplace" },
  { page: "executions", label: "Executions" },
  { page: "events", label: "Events" },
  { page: "graph", label: "Graph" },
  { page: "assist", label: "Assist" },
];

export function App() {
  return (
    <SessionProvider>
      <Shell />
    </SessionProvider>
  );
}

function Shell() {
  const route = useRoute();
  const session = useSession();
  const page = route.page || "composer";
  const nav = page === "run" ? "executions" : page;
  let body: ReactNode;
  if (session.principal === undefined) {
    body = <p className="muted">Connecting…</p>;
  } else if (session.principal === null || page === "signin") {
    body = <SignIn />;
  } else {
    body = (
      <Suspense fallback={<p className="muted">Loading…</p>}>
        {page === "catalog" && <Catalog route={route} />}
        {page === "composer" && <Composer route={route} />}
        {page === "marketplace" && <Marketplace route={route} />}
        {(page === "executions" || page === "run") && <Executions route={route} />}
        {page === "graph" && <Graph route={route} />}
        {page === "events" && <Events route={route} />}
        {page === "assist" && <Assist route={route} />}
        {!PAGES.some((p) => p.page === page) && page !== "run" && <p role="alert">No page `{page}`.</p>}
      </Suspense>
    );
  }
  const p = session.principal;
  return (
    <div className="app">
      <header className="topbar">
        <a className="brand" href={href("composer")}>
          Nexus
        </a>
        <nav aria-label="Main">
          {PAGES.map((x) => (
            <a key={x.page} href={href(x.page)} aria-current={x.page === nav ? "page" : undefined}>
              {x.label}
            </a>
          ))}
        </nav>
        <div className="who">
          {p && (
            <span data-testid="principal">
              {p.subject}@{p.tenant} · {p.roles.join(", ")}
            </span>
          )}
          {p && p.authenticatedBy !== "open" && (
            <button type="button" onClick={session.signOut}>
              Sign out
            </button>
          )}
        </div>
      </header>
      <main>{body}</main>
    </div>
  );
}
