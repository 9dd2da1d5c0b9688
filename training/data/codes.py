"""Categorify's reserved item and category codes: 0 pad, 1 null, 2 out-of-vocabulary, real
values from 3. NVTabular 23.8's own constants; `training.data.workflow` checks that they still agree,
so the model stack can use them without importing NVTabular. prepared.json records them for the
model and the server.
"""
SPECIAL_CODES = {"pad": 0, "null": 1, "oov": 2, "first_value": 3}
