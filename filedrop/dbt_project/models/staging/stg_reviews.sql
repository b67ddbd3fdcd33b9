-- One row per review record in the staged review files. Reviews have no key of their own: the
-- FileRoute replaces a file's rows when a new version of that file is loaded (replace_source), so
-- every staged row counts once; review_id names a record by its file (bucket and key) and record number.
with

source as (

    select * from {{ source('staging', 'reviews') }}

),

renamed as (

    select
        _source_bucket || '/' || _source_key || '#' || cast(_row_number as text) as review_id,
        cast(review as smallint) as review,
        cast(product_id as integer) as product_id,
        _source_bucket,
        _source_key,
        _load_id,
        _row_number,
        _loaded_at

    from source

)

select * from renamed
