"""Parses a Prometheus text exposition (a file) with the official prometheus_client parser and
prints every sample as JSON: [{"name", "labels", "value"}]. A malformed exposition raises.

Usage: metrics_parse.py METRICS_FILE
"""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        text = f.read()
    samples = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.append({"family": family.name, "type": family.type, "name": s.name,
                            "labels": s.labels, "value": s.value})
    print(json.dumps(samples))


if __name__ == "__main__":
    main()
