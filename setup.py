"""Only the native part of the package; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "prediction_service.predictors._forest",
            sources=["src/prediction_service/predictors/_forest.c"],
            extra_compile_args=["-O3"],
            optional=True,  # without a C compiler, LightGBM's own predictor serves instead
        )
    ]
)
