"""The instructor's tools: build what is generated from the solution notebooks, grade submissions, the CLI.

- :mod:`.build`   student notebooks (nbgrader) and the chapters' reference modules (:mod:`.export`);
- :mod:`.colab`   where the course lives (one setting): each chapter's install line, the README's Colab links;
- :mod:`.grade`   grading a batch of submissions into an nbgrader course folder;
- :mod:`.cli`     the ``mechinterp-course`` command.
"""
