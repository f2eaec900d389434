// A hash router: `#/page/rest?query`. The server serves one index.html; every view lives in the
// hash, so a reload or a shared link opens the same view.
import { useEffect, useState } from "react";

export interface Route {
  /** First path segment: `composer`, `marketplace`, … */
  page: string;
  /** The remaining segments, decoded. */
  rest: string[];
  query: URLSearchParams;
}

export function parseRoute(hash: string): Route {
  const raw = hash.replace(/^#\/?/, "");
  const [path, search = ""] = raw.split("?", 2);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] ?? "", rest: parts.slice(1), query: new URLSearchParams(search) };
}

export function href(page: string, ...rest: (string | undefined)[]): string {
  const segs = rest.filter((s): s is string => s !== undefined && s !== "").map(encodeURIComponent);
  return `#/${[page, ...segs].join("/")}`;
}

export function navigate(to: string): void {
  window.location.hash = to.replace(/^#/, "");
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(window.location.hash));
  useEffect(() => {
    const on = () => setRoute(parseRoute(window.location.hash));
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return route;
}
