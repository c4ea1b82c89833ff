"""The engines: tensors in, tensors and small result types out; they never draw or import a view.

* :mod:`.direct`: choose, rank and normalize channels; channel statistics;
* :mod:`.saliency`: saliency methods and targets;
* :mod:`.actmax`: activation maximization (objectives, parameterizations, transforms, the optimizer).
"""
