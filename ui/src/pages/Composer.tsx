// The composer page: `#/composer` (a new canvas), `#/composer/NAME?version=V` (a registered
// pattern), `#/composer?add=ACTION` (a new canvas with that action placed), `#/composer?draft=KEY`
// (an unregistered document another page handed over, composer/draft.ts).
import { ReactFlowProvider } from "@xyflow/react";
import { Composer } from "../composer/Composer";
import type { Route } from "../router";
import "./composer.css";

export default function ComposerPage({ route }: { route: Route }) {
  return (
    <ReactFlowProvider>
      <Composer route={route} />
    </ReactFlowProvider>
  );
}
