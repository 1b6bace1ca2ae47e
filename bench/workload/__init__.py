"""Workloads: multilingual prompt packs (`packs`) and language-fair text statistics (`text`)."""
