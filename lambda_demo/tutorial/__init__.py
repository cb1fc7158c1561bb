"""Tools for the course: the one-command `demo`, `recovery` drills, `explore` helpers for the
notebooks, the architecture `diagram`, and `notebooks` (navigation and clean execution)."""
