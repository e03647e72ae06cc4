"""The pipeline: each step declared once (:mod:`.declare`) beside the function that does it.

From a declaration come the step's command line (``workflow/scripts/step.py <step>``), the
arguments and tracked params of its Snakemake rule, and the code its DVC stage depends on (the
modules it imports: :mod:`.code`). The step modules group steps by what they import:

- :mod:`.data`: fetch, prepare
- :mod:`.pretrained`: weights
- :mod:`.build`: extract, codebook, encode (and their part jobs)
- :mod:`.search`: rank, rerank, expand, options
- :mod:`.results`: evaluate, tables, options_table, figures, pr_figure
"""
