"""Every artifact format the stages exchange, its writer and its reader, in one place.

One module per file kind: ``data`` (``data.h5``), ``synset`` (``synset.h5``), ``features``
(``features.h5``), ``experts`` (expert trajectories), ``checkpoint`` (model ``.pt``), ``tables``
(result tables: Parquet rows checked against ``runs.schema.yaml``, titled extra tables). A stage
writes and reads artifacts only through these modules, never through another stage. Importing the
package is torch-free; modules import torch where they need it.
"""
