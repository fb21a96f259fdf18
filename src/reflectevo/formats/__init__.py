"""Import and export of other projects' file layouts (the ReflectEvo paper's raw, D+, D± and Dpref files)."""

from reflectevo.formats.paper import (LAYOUTS, PaperRawRecord, PaperTrial, detect_layout, export_curated,
                                      export_raw, import_episodes, read_json_objects, read_paper_raw)

__all__ = ["LAYOUTS", "PaperRawRecord", "PaperTrial", "detect_layout", "export_curated", "export_raw",
           "import_episodes", "read_json_objects", "read_paper_raw"]
