# dvc.yaml is generated from the rules above: `make dvc-yaml` runs workflow/dvc_yaml.py, which
# parses this workflow with INSTANCE_SEARCH_DVC_DUMP set; this file then writes, for the rules it is
# given, their named inputs, outputs, log and tracked params keys (the public `rules.<name>` objects).
import json


def _dump_rules(path, names):
    dump = {}
    for name in names:
        proxy = getattr(rules, name)
        own = dict(proxy.rule.input.items())  # the input functions themselves (the proxy wraps them)
        dump[name] = {
            # an input function (extract's part folders) is Snakemake's alone: DVC runs the step whole; one
            # with a dvc_path (the codebook's learning set) is a path with a {learn_on} wildcard
            "input": {k: own[k].dvc_path if callable(v) else v if isinstance(v, str) else [str(x) for x in v]
                      for k, v in proxy.input.items() if not callable(v) or hasattr(own[k], "dvc_path")},
            "output": {k: str(v) for k, v in proxy.output.items()},
            "log": [str(x) for x in proxy.log],
            "tracked": list(getattr(proxy.params.tracked, "keys", ())),
        }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(dump, f, indent=1)


if os.environ.get("INSTANCE_SEARCH_DVC_DUMP"):
    _dump_rules(os.environ["INSTANCE_SEARCH_DVC_DUMP"], os.environ["INSTANCE_SEARCH_DVC_RULES"].split(","))
