{#-
    The static if_common dimensions (products, customers, addresses): built from seeds locally,
    read-only in production. (dim_dates is always read as a source; see README.md.)

    builds_if_common(): true unless the target is `prod`; --vars '{build_if_common: true|false}' overrides.
                        (dbt_project.yml repeats this rule for the seeds' `enabled` config.)
    if_common(name):    the relation staging reads for dimension `name`: the seed when this project
                        builds the dimensions, else source('if_common', name). Only staging calls it.
-#}
{% macro builds_if_common() -%}
    {%- set value = var('build_if_common', none) -%}
    {%- if value is none -%}
        {{ return(target.name != 'prod') }}
    {%- endif -%}
    {{ return((value | string | lower) in ['true', '1', 'yes']) }}
{%- endmacro %}

{% macro if_common(name) -%}
    {%- if builds_if_common() -%}
        {{ return(ref(name)) }}
    {%- else -%}
        {{ return(source('if_common', name)) }}
    {%- endif -%}
{%- endmacro %}
