"""Write it yourself: causal self-attention as an exercise, graded against numpy_gpt's own.

python -m numpy_gpt.exercise start LEVEL writes a skeleton (skeletons/, shipped as package data);
python -m numpy_gpt.exercise check FILE grades it (grader.py: shapes, forward, backward; payoff.py: the
kid trained with it). docs/exercise.md says what each check proves.
"""
