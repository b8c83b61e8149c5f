# Tile selection and extraction, one job per slide: it chooses the tiles (tiles.mode),
# reads each once and saves it as PNG, and writes the slide's tile table. A checkpoint:
# in grid/random/top_k modes the tiles, hence the mask jobs, are known only after it ran.


checkpoint tiles:
    input:
        unpack(tiles_inputs),
    output:
        table=LAYOUT.tile_table("{slide}"),
        tiles=directory(LAYOUT.tile_dir("{slide}")),
    log:
        LAYOUT.log("tiles/{slide}"),
    benchmark:
        LAYOUT.benchmark("tiles/{slide}")
    conda:
        MASK_ENV if MODE == "top_k" else "../envs/base.yaml"
    threads: config["threads"] if MODE == "top_k" else 1
    resources:
        gpu=MASK_GPU if MODE == "top_k" else 0,
    params:
        tiles=tiles_params,
    script:
        "../scripts/tiles.py"
