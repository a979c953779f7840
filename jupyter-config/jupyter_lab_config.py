"""The course's JupyterLab server settings; ./course copies jupyter-config/ into .venv/etc/jupyter/ at every run.

The course runs offline, so JupyterLab's server neither fetches the Jupyter news feed nor asks PyPI for a newer
JupyterLab. The page's side of the same switches (labconfig/default_setting_overrides.d/mechinterp-course.json) stops
it from asking the student, at first start, whether to fetch news: a question whose "yes" cannot work offline.
"""

c = get_config()  # noqa: F821 - defined by the Jupyter configuration loader

c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.handlers.announcements.NeverCheckForUpdate"
