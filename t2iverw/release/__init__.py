"""The official T2I-VeRW / T2I-VeRI release format: import it into a build, export any build as it.

- `layout`: the format's rules (file names, fields, part files, augmented-copy paths),
  as the authors' loader applies them, and the checks that reject a bad record.
- `importer`: `t2iverw import-release ROOT --out BUILD`.
- `pfcvr`: `t2iverw export BUILD --format pfcvr --out DIR`, the authors' layout.
- `augment`: the dark / light / noisy copies that `--augmented-copies` makes.
"""
