"""yiyun.empi"""
