"""Parses OpenMetrics text (stdin) with the Prometheus project's reference parser and prints its
samples as JSON: one object per sample with the family's name and type. Any deviation from the
format is an error (exit status 1, the parser's message on stderr)."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main() -> int:
    text = sys.stdin.read()
    out = []
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.append(
                    {
                        "family": family.name,
                        "type": family.type,
                        "unit": family.unit,
                        "name": s.name,
                        "labels": s.labels,
                        "value": s.value,
                    }
                )
    except Exception as e:  # the parser raises ValueError and friends
        print(f"invalid OpenMetrics: {e}", file=sys.stderr)
        return 1
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
