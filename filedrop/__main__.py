from filedrop.cli import main

main()
