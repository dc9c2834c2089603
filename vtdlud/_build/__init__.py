"""Build-time generators: the man pages and the bash completion, made from the code.

The packages (``packaging/debian/rules``, ``packaging/rpm/vtdlud.spec``) run these while they build,
so what ships cannot drift from the argument parser, the config schema or the findings catalog:

- ``python3 -m vtdlud._build.manpage --out DIR`` writes ``vtdlud.8`` and ``vtdlud.toml.5``;
- ``python3 -m vtdlud._build.completion`` prints the bash completion for ``vtdlud``.

Nothing here is imported at run time.
"""
