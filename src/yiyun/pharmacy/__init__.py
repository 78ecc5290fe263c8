"""yiyun.pharmacy"""
