-- One row per calendar date (if_common.dim_dates), with the public-holiday rule of DESIGN §6.
-- dim_dates is always a source: locally filedrop generates it from the `holidays` package before dbt runs.
with

source as (

    select * from {{ source('if_common', 'dim_dates') }}

),

renamed as (

    select
        cast(calendar_dt as date) as calendar_dt,
        cast(year_num as integer) as year_num,
        cast(month_of_the_year_num as integer) as month_of_the_year_num,
        cast(day_of_the_month_num as integer) as day_of_the_month_num,
        cast(day_of_the_week_num as integer) as day_of_the_week_num,
        cast(working_day as boolean) as working_day,
        -- a public holiday is a weekday (ISO 1-5) that is not a working day
        (cast(day_of_the_week_num as integer) between 1 and 5 and not cast(working_day as boolean))
            as is_public_holiday

    from source

)

select * from renamed
