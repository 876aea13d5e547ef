"""`cae serve`: a local web page to colorize photos and reconstruct images through the autoencoders.

`app` holds the Starlette routes and `serve`; `jobs` what each request computes; `models` the
listed models, their cache and the one adapter into the colorization API; `images` upload
decoding and PNG encoding; `samples` the CIFAR-10 grid; `results` the study reports under --runs.
Needs the `serve` extra (Starlette, uvicorn, python-multipart); nothing here is imported by the
rest of cae.
"""
