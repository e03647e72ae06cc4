"""Run one declared pipeline step (src/instance_search/pipeline): step.py <step> --params params.yaml ...

`step.py --help` lists the steps; `step.py <step> --help` its arguments.
"""

from instance_search.pipeline.command import main

if __name__ == "__main__":
    main(__file__)
