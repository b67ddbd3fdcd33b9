{#-
    The two dates of a run (DESIGN §6), as SQL date literals.
    as_of_date:     the brief's "current date" the analytics are computed for (var, default today).
    ingestion_date: the key of the analytics rows written by this run (var, default today).
    Both are validated here, so a malformed var fails the run with a clear message, not bad SQL.
-#}
{% macro _run_date(name) -%}
    {%- set value = var(name, modules.datetime.date.today().isoformat()) | string -%}
    {%- if not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', value) -%}
        {{ exceptions.raise_compiler_error("var " ~ name ~ " must be a date YYYY-MM-DD, got " ~ value) }}
    {%- endif -%}
    cast('{{ value }}' as date)
{%- endmacro %}

{% macro as_of_date() -%}
    {{ _run_date('as_of_date') }}
{%- endmacro %}

{% macro ingestion_date() -%}
    {{ _run_date('ingestion_date') }}
{%- endmacro %}
