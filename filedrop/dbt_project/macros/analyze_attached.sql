{#-
    analyze_attached_staging(): on-run-start hook. Large loads attach their table to the staging table
    (docs/operations.md, "Attached load tables"). PostgreSQL's autovacuum analyzes each attached table
    but never the staging table's statistics over itself and its children, which the planner uses for
    the models' joins; this hook refreshes them once per run, for the staging tables that have attached
    tables. (A role that does not own a table gets a warning from ANALYZE, not an error.)
-#}
{% macro analyze_attached_staging() -%}
    {%- if execute -%}
        {%- set found = run_query(
            "select distinct format('%I.%I', n.nspname, c.relname) from pg_inherits i "
            ~ "join pg_class c on c.oid = i.inhparent join pg_namespace n on n.oid = c.relnamespace "
            ~ "where n.nspname = '" ~ (var('staging_schema', env_var('FILEDROP_STAGING_SCHEMA', 'staging'))
                                       | replace("'", "''")) ~ "' order by 1") -%}
        {%- for row in found.rows -%}
            analyze {{ row[0] }};
        {% endfor -%}
    {%- endif -%}
    select 1
{%- endmacro %}
