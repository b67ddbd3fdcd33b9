-- if_common.dim_dates has every day between its first and last date exactly once, date parts that
-- agree with the date, and no Saturday or Sunday as a working day. Returns the offending dates.
with

dates as (

    select * from {{ ref('stg_dates') }}

),

expected as (

    select cast(day as date) as calendar_dt
    from generate_series(
        (select min(calendar_dt) from dates), (select max(calendar_dt) from dates), interval '1 day'
    ) as day

)

select expected.calendar_dt, 'missing' as problem
from expected
left join dates on expected.calendar_dt = dates.calendar_dt
where dates.calendar_dt is null

union all

select calendar_dt, 'date parts disagree with the date'
from dates
where year_num <> extract(year from calendar_dt)
    or month_of_the_year_num <> extract(month from calendar_dt)
    or day_of_the_month_num <> extract(day from calendar_dt)
    or day_of_the_week_num <> extract(isodow from calendar_dt)

union all

select calendar_dt, 'a weekend day marked as a working day'
from dates
where day_of_the_week_num in (6, 7) and working_day
