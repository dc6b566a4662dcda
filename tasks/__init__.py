"""One file per task family (what main.py asks instead of branching on a task name); importing the
package registers the built-in ones: GLUE (tasks/glue.py), SQuAD (tasks/squad.py), causal LM
(tasks/causal_lm.py), sentence-embedding similarity (tasks/sentence_similarity.py)."""
from tasks import glue, squad, causal_lm, sentence_similarity  # noqa: F401  # isort: skip  (registration order = --task_name order)
