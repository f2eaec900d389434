// The one client of the Nexus API used by every page: gRPC-Web (so server streams work in the
// browser) on the origin that served the UI, with the signed-in API key as a bearer token.
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { NexusService } from "./gen/nexus/v1/nexus_pb";

const KEY_STORAGE = "nexus.apiKey";

export function apiKey(): string | null {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function setApiKey(key: string | null): void {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

const auth: Interceptor = (next) => async (req) => {
  const key = apiKey();
  if (key) req.header.set("authorization", `Bearer ${key}`);
  return next(req);
};

const transport = createGrpcWebTransport({
  baseUrl: typeof window === "undefined" ? "http://127.0.0.1:50051" : window.location.origin,
  interceptors: [auth],
});

export const nexus = createClient(NexusService, transport);

/** The server's own message for a failed call (what the user is shown), with its gRPC code. */
export function errorText(err: unknown): string {
  if (err instanceof ConnectError) {
    const code = Code[err.code] ?? String(err.code);
    return `${code.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase()}: ${err.rawMessage}`;
  }
  if (err instanceof Error) return err.message;
  return String(err);
}

export function isCode(err: unknown, code: Code): boolean {
  return err instanceof ConnectError && err.code === code;
}

export { Code, ConnectError };
