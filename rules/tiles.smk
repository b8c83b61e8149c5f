# Tile extraction: each slide is opened once and its selected tiles saved as PNG,
# so masks and overlays never reopen slides. One rule per slide (its tile list
# is fixed by the tile table).

for slide_index, slide in enumerate(PLAN.tiles):

    rule:
        name:
            f"tiles_{slide_index}"
        input:
            slide=slide_path(slide),
            geometry=geometry_inputs(),
        output:
            slide_tile_pngs(slide),
        log:
            f"logs/tiles/{slide}.log",
        benchmark:
            f"benchmarks/tiles/{slide}.tsv"
        conda:
            "../envs/base.yaml"
        params:
            slide=slide,
            tile_names=[tile.name for tile in PLAN.tiles[slide]],
            mpp=PLAN.slides[slide].mpp,
        script:
            "../scripts/tiles.py"
