"""`cae serve`: a local web page to colorize photos and reconstruct images through the autoencoders.

`app` holds the Starlette routes, the origin check, the queue and `serve`; `jobs` what each
request computes and the memory it may hold; `models` the index of the listed models, their
cache and the one adapter into the colorization API; `store` the full-resolution results kept
for download and the memory budget; `images` PNG encoding and previews; `samples` the CIFAR-10
grid; `results` the study reports under --runs; `guide` the Guide mode (a photo kept while
hints are placed, its previews, suggestions and full-resolution render).
Needs the `serve` extra (Starlette, uvicorn, python-multipart); nothing here is imported by the
rest of cae.
"""
