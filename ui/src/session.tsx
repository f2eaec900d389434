// Who the user is (WhoAmI with the stored API key) and what the key may do. Controls for actions
// the key may not take are hidden or disabled with `can`; a refusal the server still sends is
// shown as its message.
import { createContext, useCallback, useContext, useEffect, useState, type ReactNode } from "react";
import { apiKey, Code, errorText, isCode, nexus, setApiKey } from "./api";
import type { Principal } from "./gen/nexus/v1/nexus_pb";

export type Ability = "read" | "author" | "run" | "admin";

export interface Session {
  /** Undefined while loading; null when the server wants credentials and has none (or bad ones). */
  principal: Principal | null | undefined;
  /** Why the last sign-in failed. */
  error: string | null;
  can(ability: Ability): boolean;
  signIn(key: string): Promise<boolean>;
  signOut(): void;
}

const SessionContext = createContext<Session | null>(null);

export function can(principal: Principal | null | undefined, ability: Ability): boolean {
  if (!principal) return false;
  const roles = principal.roles;
  if (roles.includes("admin")) return true;
  switch (ability) {
    case "read":
      return roles.some((r) => r === "viewer" || r === "runner" || r === "author");
    case "author":
      return roles.includes("author");
    case "run":
      return roles.includes("runner");
    case "admin":
      return false;
  }
}

export function SessionProvider({ children }: { children: ReactNode }) {
  const [principal, setPrincipal] = useState<Principal | null | undefined>(undefined);
  const [error, setError] = useState<string | null>(null);

  const load = useCallback(async (): Promise<boolean> => {
    try {
      setPrincipal(await nexus.whoAmI({}));
      setError(null);
      return true;
    } catch (err) {
      setPrincipal(null);
      setError(isCode(err, Code.Unauthenticated) && !apiKey() ? null : errorText(err));
      return false;
    }
  }, []);

  useEffect(() => {
    void load();
  }, [load]);

  const value: Session = {
    principal,
    error,
    can: (ability) => can(principal, ability),
    signIn: async (key) => {
      setApiKey(key.trim());
      const ok = await load();
      if (!ok) setApiKey(null);
      return ok;
    },
    signOut: () => {
      setApiKey(null);
      void load();
    },
  };
  return <SessionContext.Provider value={value}>{children}</SessionContext.Provider>;
}

export function useSession(): Session {
  const s = useContext(SessionContext);
  if (!s) throw new Error("useSession outside SessionProvider");
  return s;
}
