"""The lab: ``attnlab tour`` (each claim of the field measured and judged), ``attnlab inspect`` (every attention
site of a model) and the HTML report. Reads models, experiments and saved results; nothing below imports it."""
